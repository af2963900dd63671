//! The driver task: one async-std channel, tasks and one timer around the shared
//! [`microlock_proto::driver::Driver`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_std::channel::{Receiver, Sender};
use async_std::task::{self, JoinHandle};
use microlock_proto::driver::{Command as DriverCommand, Driver, Failure, Flow, Runtime};
use microlock_proto::http::{Request, Response};
use microlock_proto::{Error, Event, Fence, Lock, Members, Outcome, RequestId};

use crate::http_client::HttpClient;

pub(crate) type Reply = Sender<Result<Outcome, Error>>;
pub(crate) type Command = DriverCommand<Reply, Sender<Event>>;

/// The current hold, shared with the public handles for their synchronous getters.
pub(crate) type Shared = Arc<Mutex<Option<Fence>>>;

/// The members' health, shared by the locks of one `Etcd`.
pub(crate) type SharedMembers = Arc<Mutex<Members>>;

/// What the driver waits for, on one channel: a command from the API or a finished request.
#[derive(Debug)]
pub(crate) enum Input {
    Command(Command),
    Done(RequestId, Result<Response<Vec<u8>>, Failure>),
}

struct AsyncStd {
    client: HttpClient,
    inputs: Sender<Input>,
    shared: Shared,
    members: SharedMembers,
}

impl Runtime for AsyncStd {
    type Task = JoinHandle<()>;
    type Reply = Reply;
    type Subscriber = Sender<Event>;

    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> JoinHandle<()> {
        let (client, inputs) = (self.client.clone(), self.inputs.clone());
        task::spawn(async move {
            let _ = inputs.try_send(Input::Done(id, client.send(request).await));
        })
    }

    fn abort(&mut self, task: JoinHandle<()>) {
        // Cancelling drops the request's future, and with it its connection.
        task::spawn(task.cancel());
    }

    fn reply(&mut self, reply: Reply, result: Result<Outcome, Error>) {
        let _ = reply.try_send(result);
    }

    fn deliver(&mut self, subscriber: &Self::Subscriber, event: &Event) -> bool {
        subscriber.try_send(event.clone()).is_ok()
    }

    fn is_closed(&self, subscriber: &Self::Subscriber) -> bool {
        subscriber.is_closed()
    }

    fn reply_closed(&self, reply: &Reply) -> bool {
        reply.is_closed()
    }

    fn publish(&mut self, fence: Option<Fence>) {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = fence;
    }

    fn sync_members(&mut self, lock: &mut Lock) {
        lock.sync_members(&mut self.members.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

pub(crate) async fn run(
    lock: Lock,
    client: HttpClient,
    members: SharedMembers,
    shared: Shared,
    inputs: Sender<Input>,
    receiver: Receiver<Input>,
) {
    let mut rt = AsyncStd {
        client,
        inputs,
        shared,
        members,
    };
    let mut driver = Driver::new(lock);
    let mut flow = Flow::Continue(None);
    while let Flow::Continue(deadline) = flow {
        flow = match next(&receiver, deadline).await {
            Some(Input::Command(command)) => driver.command(&mut rt, command, Instant::now()),
            Some(Input::Done(id, outcome)) => driver.response(&mut rt, id, outcome, Instant::now()),
            None => driver.timeout(&mut rt, Instant::now()),
        };
    }
    // Senders keep the channel, and what is queued in it, alive: close it so later commands
    // fail, and drop the queued ones so their callers get `Destroyed` instead of waiting.
    receiver.close();
    while receiver.try_recv().is_ok() {}
}

/// The next input, or `None` once `deadline` has passed.
async fn next(receiver: &Receiver<Input>, deadline: Option<Instant>) -> Option<Input> {
    let input = match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            async_std::future::timeout(left, receiver.recv())
                .await
                .ok()?
        }
        None => receiver.recv().await,
    };
    // `rt` holds a sender, so the channel cannot close; were it to, stop.
    Some(input.unwrap_or(Input::Command(DriverCommand::Destroy)))
}
