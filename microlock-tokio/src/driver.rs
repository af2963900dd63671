//! The driver task: tokio channels, tasks and one timer around the shared
//! [`microlock_proto::driver::Driver`].

use microlock_proto::driver::{Command as DriverCommand, Driver, Failure, Flow, Runtime};
use microlock_proto::http::{Request, Response};
use std::sync::{Arc, Mutex};

use microlock_proto::{Error, Event, Fence, Lock, Members, Outcome, RequestId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::http_client::HttpClient;

type Done = (RequestId, Result<Response<Vec<u8>>, Failure>);
pub(crate) type Reply = oneshot::Sender<Result<Outcome, Error>>;
pub(crate) type Command = DriverCommand<Reply, mpsc::UnboundedSender<Event>>;

/// The current hold, shared with the public handles for their synchronous getters.
pub(crate) type Shared = Arc<Mutex<Option<Fence>>>;

/// The members' health, shared by the locks of one `Etcd`.
pub(crate) type SharedMembers = Arc<Mutex<Members>>;

struct Tokio {
    client: HttpClient,
    done: mpsc::UnboundedSender<Done>,
    shared: Shared,
    members: SharedMembers,
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

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(crate) async fn run(
    lock: Lock,
    client: HttpClient,
    members: SharedMembers,
    shared: Shared,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let (done, mut finished) = mpsc::unbounded_channel();
    let mut rt = Tokio {
        client,
        done,
        shared,
        members,
    };
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
