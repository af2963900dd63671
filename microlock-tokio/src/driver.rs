//! The driver task: tokio channels, tasks and one timer around the shared
//! [`microlock_proto::driver::Driver`].
//!
//! A whole request (lock, unlock, renew, a read: most of them) runs inside the driver task:
//! the loop polls its future beside the commands and the timer, so its answer reaches the
//! machine without a task of its own or a channel. Aborting it drops the future (and closes
//! its connection). A [`Streamed`] request (a watch) runs on a task of its own and sends its
//! pieces (head, each body chunk as it comes, end) on a small bounded channel shared by the
//! streamed requests: a task waits for room before it reads on, so however slow the loop, at
//! most [`PIECES`] chunks wait in it, and a body the machine refuses is never read further
//! (its task is aborted).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

type Answer = Result<Response<Vec<u8>>, Failure>;

/// A whole request on its way, polled by the loop.
type Exchange = Pin<Box<dyn Future<Output = Answer> + Send>>;
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

/// A started request: a whole one in the loop's [`Exchanges`], or a streamed one's task.
enum Task {
    Inline(RequestId),
    Spawned(AbortHandle),
}

/// The whole requests in flight, polled in turn by the loop (a lock has a handful at most).
#[derive(Default)]
struct Exchanges(Vec<(RequestId, Exchange)>);

impl Exchanges {
    /// The first request that has its outcome, taken out.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(RequestId, Answer)> {
        for i in 0..self.0.len() {
            if let Poll::Ready(outcome) = self.0[i].1.as_mut().poll(cx) {
                let (id, _) = self.0.swap_remove(i);
                return Poll::Ready((id, outcome));
            }
        }
        Poll::Pending
    }
}

struct Tokio {
    client: HttpClient,
    exchanges: Exchanges,
    pieces: mpsc::Sender<(RequestId, Piece)>,
    shared: Shared,
    members: SharedMembers,
}

impl Runtime for Tokio {
    type Task = Task;
    type Reply = Reply;
    type Subscriber = mpsc::UnboundedSender<Event>;

    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> Task {
        let client = self.client.clone();
        if request.extensions().get::<Streamed>().is_some() {
            let pieces = self.pieces.clone();
            return Task::Spawned(tokio::spawn(stream(client, id, request, pieces)).abort_handle());
        }
        let exchange = async move { client.send(request).await };
        self.exchanges.0.push((id, Box::pin(exchange)));
        Task::Inline(id)
    }

    fn abort(&mut self, task: Task) {
        match task {
            Task::Inline(id) => self.exchanges.0.retain(|(i, _)| *i != id),
            Task::Spawned(handle) => handle.abort(),
        }
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
    let (pieces, mut streamed) = mpsc::channel(PIECES);
    let mut rt = Tokio {
        client,
        exchanges: Exchanges::default(),
        pieces,
        shared,
        members,
    };
    let mut driver = Driver::new(lock);
    // Whether the channel has closed (every handle dropped): a closed channel is ready at once
    // and for ever, so it is read once (a `Destroy`), never again. The loop may go on after
    // that: a v3 lock revokes its lease before it stops.
    let mut closed = false;
    // One timer for the loop's life, moved when the machine's deadline moves: a new timer on
    // every turn registers with tokio's timer wheel each time, and one earlier than the
    // wheel's next wake-up wakes the I/O driver with a syscall (twice per lock+unlock).
    let timer = tokio::time::sleep_until(far_future());
    tokio::pin!(timer);
    let mut armed = None;
    let mut flow = Flow::Continue(None);
    while let Flow::Continue(deadline) = flow {
        if deadline != armed {
            armed = deadline;
            timer
                .as_mut()
                .reset(deadline.map_or_else(far_future, Instant::from_std));
        }
        flow = tokio::select! {
            command = commands.recv(), if !closed => {
                closed = command.is_none();
                let command = command.unwrap_or(DriverCommand::Destroy);
                driver.command(&mut rt, command, now())
            }
            (id, outcome) = std::future::poll_fn(|cx| rt.exchanges.poll_next(cx)) => {
                driver.response(&mut rt, id, outcome, now())
            }
            Some((id, piece)) = streamed.recv() => match piece {
                Piece::Head(head) => driver.response_head(&mut rt, id, head, now()),
                Piece::Body(data) => driver.response_body(&mut rt, id, &data, now()),
                Piece::End(end) => driver.response_end(&mut rt, id, end, now()),
            },
            () = &mut timer, if armed.is_some() => driver.timeout(&mut rt, now()),
        };
    }
}

/// Where the timer waits while the machine has no deadline (moving it there and back is
/// cheap: a later deadline only extends the timer's entry).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}
