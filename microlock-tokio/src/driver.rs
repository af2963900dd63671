//! The driver task: one loop that feeds the machine and carries out what it asks.

use std::collections::HashMap;

use microlock_proto::http::Response;
use microlock_proto::{Error, Event, Lock, OpId, Outcome, RequestId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::http_client::HttpClient;

type Reply = oneshot::Sender<Result<Outcome, Error>>;

/// What the public API asks of the driver.
pub(crate) enum Command {
    Lock(Reply),
    Unlock(Reply),
    Renew(Reply),
    Subscribe(mpsc::UnboundedSender<Event>),
    Unsubscribed,
    Destroy,
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(crate) async fn run(
    mut machine: Lock,
    client: HttpClient,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(RequestId, Result<Response<Vec<u8>>, String>)>();
    let mut in_flight: HashMap<RequestId, AbortHandle> = HashMap::new();
    let mut waiting: HashMap<OpId, Reply> = HashMap::new();
    let mut subscribers: Vec<mpsc::UnboundedSender<Event>> = Vec::new();

    loop {
        while let Some(id) = machine.poll_cancel() {
            if let Some(task) = in_flight.remove(&id) {
                task.abort();
            }
        }
        while let Some((id, request)) = machine.poll_request() {
            let (client, done) = (client.clone(), done_tx.clone());
            let task = tokio::spawn(async move {
                let _ = done.send((id, client.send(request).await));
            });
            in_flight.insert(id, task.abort_handle());
        }
        while let Some(completion) = machine.poll_completion() {
            if let Some(reply) = waiting.remove(&completion.op) {
                let _ = reply.send(completion.result);
            }
        }
        while let Some(event) = machine.poll_event() {
            subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
        if machine.is_destroyed() {
            for (_, task) in in_flight.drain() {
                task.abort();
            }
            return; // drops the subscribers: their streams end
        }

        let deadline = machine.poll_timeout();
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Lock(reply)) => { waiting.insert(machine.lock(now()), reply); }
                Some(Command::Unlock(reply)) => { waiting.insert(machine.unlock(now()), reply); }
                Some(Command::Renew(reply)) => { waiting.insert(machine.renew(now()), reply); }
                Some(Command::Subscribe(subscriber)) => {
                    if let Some(event) = machine.current_state_event() {
                        let _ = subscriber.send(event);
                    }
                    subscribers.push(subscriber);
                    machine.set_watching(true, now());
                }
                Some(Command::Unsubscribed) => {
                    subscribers.retain(|s| !s.is_closed());
                    machine.set_watching(!subscribers.is_empty(), now());
                }
                Some(Command::Destroy) | None => machine.destroy(now()),
            },
            Some((id, result)) = done_rx.recv() => {
                in_flight.remove(&id);
                match result {
                    Ok(response) => machine.handle_response(id, response, now()),
                    Err(reason) => machine.handle_transport_error(id, &reason, now()),
                }
            }
            () = sleep_until(deadline) => machine.handle_timeout(now()),
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}
