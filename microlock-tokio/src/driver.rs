//! The driver task: tokio channels, tasks and one timer around the shared
//! [`microlock_proto::driver::Driver`].
//!
//! Each request runs on a task of its own. A whole one sends its outcome on an unbounded
//! channel (one message per request). A [`Streamed`] one sends its pieces (head, each body
//! chunk as it comes, end) on a small bounded channel shared by the streamed requests: a task
//! waits for room before it reads on, so however slow the loop, at most [`PIECES`] chunks
//! wait in it, and a body the machine refuses is never read further (its task is aborted).

use bytes::Bytes;
use microlock_proto::driver::{Command as DriverCommand, Driver, Failure, Flow, Runtime};
use microlock_proto::http::response::Parts;
use microlock_proto::http::{Request, Response};
use std::sync::{Arc, Mutex};

use microlock_proto::{Error, Event, Fence, Lock, Members, Outcome, RequestId, Streamed};
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

/// A piece of a streamed response.
enum Piece {
    Head(Parts),
    Body(Bytes),
    End(Result<(), Failure>),
}

/// How many pieces of streamed responses may wait for the loop at once (then their tasks wait
/// before reading on).
const PIECES: usize = 4;

struct Tokio {
    client: HttpClient,
    done: mpsc::UnboundedSender<Done>,
    pieces: mpsc::Sender<(RequestId, Piece)>,
    shared: Shared,
    members: SharedMembers,
}

impl Runtime for Tokio {
    type Task = AbortHandle;
    type Reply = Reply;
    type Subscriber = mpsc::UnboundedSender<Event>;

    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> AbortHandle {
        if request.extensions().get::<Streamed>().is_some() {
            let (client, pieces) = (self.client.clone(), self.pieces.clone());
            return tokio::spawn(stream(client, id, request, pieces)).abort_handle();
        }
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

/// Sends a streamed request and hands its pieces over as they come, each once the loop has
/// room for it. Ends early if the loop is gone.
async fn stream(
    client: HttpClient,
    id: RequestId,
    request: Request<Vec<u8>>,
    pieces: mpsc::Sender<(RequestId, Piece)>,
) {
    let end = match client.open(request).await {
        Ok((head, mut body)) => {
            if pieces.send((id, Piece::Head(head))).await.is_err() {
                return;
            }
            loop {
                match body.chunk().await {
                    Ok(Some(data)) => {
                        if pieces.send((id, Piece::Body(data))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(failure) => break Err(failure),
                }
            }
        }
        Err(failure) => Err(failure),
    };
    let _ = pieces.send((id, Piece::End(end))).await;
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
    let (pieces, mut streamed) = mpsc::channel(PIECES);
    let mut rt = Tokio {
        client,
        done,
        pieces,
        shared,
        members,
    };
    let mut driver = Driver::new(lock);
    // Whether the channel has closed (every handle dropped): a closed channel is ready at once
    // and for ever, so it is read once (a `Destroy`), never again. The loop may go on after
    // that: a v3 lock revokes its lease before it stops.
    let mut closed = false;
    let mut flow = Flow::Continue(None);
    while let Flow::Continue(deadline) = flow {
        flow = tokio::select! {
            command = commands.recv(), if !closed => {
                closed = command.is_none();
                let command = command.unwrap_or(DriverCommand::Destroy);
                driver.command(&mut rt, command, now())
            }
            Some((id, outcome)) = finished.recv() => driver.response(&mut rt, id, outcome, now()),
            Some((id, piece)) = streamed.recv() => match piece {
                Piece::Head(head) => driver.response_head(&mut rt, id, head, now()),
                Piece::Body(data) => driver.response_body(&mut rt, id, &data, now()),
                Piece::End(end) => driver.response_end(&mut rt, id, end, now()),
            },
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
