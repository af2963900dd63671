//! The driver task: tokio channels, tasks and one timer around the shared
//! [`microlock_proto::driver::Driver`].

use microlock_proto::driver::{Command as DriverCommand, Driver, Flow, Runtime};
use microlock_proto::http::{Request, Response};
use microlock_proto::{Error, Event, Lock, Outcome, RequestId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::http_client::HttpClient;

type Done = (RequestId, Result<Response<Vec<u8>>, String>);
pub(crate) type Reply = oneshot::Sender<Result<Outcome, Error>>;
pub(crate) type Command = DriverCommand<Reply, mpsc::UnboundedSender<Event>>;

struct Tokio {
    client: HttpClient,
    done: mpsc::UnboundedSender<Done>,
}

impl Runtime for Tokio {
    type Task = AbortHandle;
    type Reply = Reply;
    type Subscriber = mpsc::UnboundedSender<Event>;

    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> AbortHandle {
        let (client, done) = (self.client.clone(), self.done.clone());
        tokio::spawn(async move {
            let _ = done.send((id, client.send(request).await));
        })
        .abort_handle()
    }

    fn abort(&mut self, task: AbortHandle) {
        task.abort();
    }

    fn reply(&mut self, reply: Reply, result: Result<Outcome, Error>) {
        let _ = reply.send(result);
    }

    fn deliver(&mut self, subscriber: &Self::Subscriber, event: &Event) -> bool {
        subscriber.send(event.clone()).is_ok()
    }

    fn is_closed(&self, subscriber: &Self::Subscriber) -> bool {
        subscriber.is_closed()
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(crate) async fn run(
    lock: Lock,
    client: HttpClient,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let (done, mut finished) = mpsc::unbounded_channel();
    let mut rt = Tokio { client, done };
    let mut driver = Driver::new(lock);
    let mut flow = Flow::Continue(None);
    while let Flow::Continue(deadline) = flow {
        flow = tokio::select! {
            command = commands.recv() => {
                let command = command.unwrap_or(DriverCommand::Destroy);
                driver.command(&mut rt, command, now())
            }
            Some((id, outcome)) = finished.recv() => driver.response(&mut rt, id, outcome, now()),
            () = sleep_until(deadline) => driver.timeout(&mut rt, now()),
        };
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}
