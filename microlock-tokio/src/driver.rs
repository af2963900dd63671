//! The driver task: tokio channels, tasks and one timer around the shared
//! [`microlock_proto::driver::Driver`].
//!
//! Every request runs inside the driver task: the loop polls it beside the commands and the
//! timer, so its answer reaches the machine without a task of its own or a channel (on a
//! hand-off, a watch's event goes straight from its connection to the machine). A whole
//! request (lock, unlock, renew, a read: most of them) is a future of its response. A
//! [`Streamed`] one (a watch) is polled up to its head, then chunk by chunk: each piece is read
//! only when the loop asks for it and handed to the machine at once, so nothing of a body waits
//! anywhere but in the machine's bounded buffer, and a body the machine refuses is never read
//! further. Aborting a request drops it (and closes its connection).

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
use tokio::time::Instant;

use crate::http_client::{Body, HttpClient};

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

/// A streamed request up to its response's head.
type Opening = Pin<Box<dyn Future<Output = Result<(Parts, Body), Failure>> + Send>>;

/// A streamed request in flight: waiting for its head, then reading its body.
enum Stream {
    Opening(Opening),
    Body(Body),
}

/// The requests in flight, polled by the loop (a lock has a handful at most).
#[derive(Default)]
struct Exchanges {
    whole: Vec<(RequestId, Exchange)>,
    streamed: Vec<(RequestId, Stream)>,
    /// Where the next poll of the streamed ones starts (taking turns: a body that is always
    /// ready cannot starve the others).
    turn: usize,
}

/// What came of a request in flight.
enum Came {
    /// A whole request's outcome.
    Whole(RequestId, Answer),
    /// A piece of a streamed one's response.
    Piece(RequestId, Piece),
}

impl Exchanges {
    /// What came first: a whole request's outcome (taken out), else a streamed one's piece.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Came> {
        for i in 0..self.whole.len() {
            if let Poll::Ready(outcome) = self.whole[i].1.as_mut().poll(cx) {
                let (id, _) = self.whole.swap_remove(i);
                return Poll::Ready(Came::Whole(id, outcome));
            }
        }
        self.poll_piece(cx)
            .map(|(id, piece)| Came::Piece(id, piece))
    }

    /// The next piece of a streamed response that has one; a request is taken out with its
    /// end.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<(RequestId, Piece)> {
        let n = self.streamed.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let (id, stream) = &mut self.streamed[i];
            let id = *id;
            let piece = match stream {
                Stream::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => continue,
                    Poll::Ready(Ok((head, body))) => {
                        *stream = Stream::Body(body);
                        Piece::Head(head)
                    }
                    Poll::Ready(Err(failure)) => Piece::End(Err(failure)),
                },
                Stream::Body(body) => match body.poll_chunk(cx) {
                    Poll::Pending => continue,
                    Poll::Ready(Ok(Some(data))) => Piece::Body(data),
                    Poll::Ready(Ok(None)) => Piece::End(Ok(())),
                    Poll::Ready(Err(failure)) => Piece::End(Err(failure)),
                },
            };
            if matches!(piece, Piece::End(_)) {
                self.streamed.swap_remove(i);
            }
            self.turn = i + 1;
            return Poll::Ready((id, piece));
        }
        Poll::Pending
    }
}

struct Tokio {
    client: HttpClient,
    exchanges: Exchanges,
    shared: Shared,
    members: SharedMembers,
}

impl Runtime for Tokio {
    type Task = RequestId;
    type Reply = Reply;
    type Subscriber = mpsc::UnboundedSender<Event>;

    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> RequestId {
        let client = self.client.clone();
        if request.extensions().get::<Streamed>().is_some() {
            let opening = async move { client.open(request).await };
            (self.exchanges.streamed).push((id, Stream::Opening(Box::pin(opening))));
            return id;
        }
        let exchange = async move { client.send(request).await };
        self.exchanges.whole.push((id, Box::pin(exchange)));
        id
    }

    fn abort(&mut self, id: RequestId) {
        self.exchanges.whole.retain(|(i, _)| *i != id);
        self.exchanges.streamed.retain(|(i, _)| *i != id);
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
    let mut rt = Tokio {
        client,
        exchanges: Exchanges::default(),
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
        // A turn of tokio's cooperative budget: a response that is always ready (a watch
        // stream's flood of events) cannot hold the worker thread for ever (hyper's bodies do
        // not count against the budget themselves).
        tokio::task::consume_budget().await;
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
            came = std::future::poll_fn(|cx| rt.exchanges.poll_next(cx)) => match came {
                Came::Whole(id, outcome) => driver.response(&mut rt, id, outcome, now()),
                Came::Piece(id, Piece::Head(head)) => {
                    driver.response_head(&mut rt, id, head, now())
                }
                Came::Piece(id, Piece::Body(data)) => {
                    driver.response_body(&mut rt, id, &data, now())
                }
                Came::Piece(id, Piece::End(end)) => driver.response_end(&mut rt, id, end, now()),
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
