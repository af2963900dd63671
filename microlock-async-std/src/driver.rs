//! The driver: one loop around the shared [`microlock_proto::driver::Driver`], its channel, the
//! requests in flight and one timer. The loop runs on its own task and, while a caller waits
//! for an answer, on the caller's task too.
//!
//! The loop polls the requests in flight itself: a whole one is a future of its response; a
//! [`Streamed`] one a stream of [`Piece`]s, each read only when the loop polls for it and
//! handed to the driver at once, so nothing of a body waits anywhere but in the machine's
//! bounded buffer (and the connection's own).

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_io::Timer;
use async_std::channel::{Receiver, RecvError, Sender, TryRecvError};
use futures_core::Stream;
use microlock_proto::driver::{Command as DriverCommand, Driver, Failure, Flow, Runtime};
use microlock_proto::http::{Request, Response};
use microlock_proto::{Error, Event, Fence, Lock, Members, Outcome, RequestId, Streamed};

use crate::http_client::{HttpClient, Piece, Pieces};

pub(crate) type Reply = Sender<Result<Outcome, Error>>;
pub(crate) type Command = DriverCommand<Reply, Sender<Event>>;

/// The current hold, shared with the public handles for their synchronous getters.
pub(crate) type Shared = Arc<Mutex<Option<Fence>>>;

/// The members' health, shared by the locks of one `Etcd`.
pub(crate) type SharedMembers = Arc<Mutex<Members>>;

/// What the driver's channel carries: a command from the API.
#[derive(Debug)]
pub(crate) enum Input {
    Command(Command),
}

type Whole = Pin<Box<dyn Future<Output = Result<Response<Vec<u8>>, Failure>> + Send>>;

/// A request in flight.
enum Exchange {
    /// Its whole response.
    Whole(Whole),
    /// Its response in pieces ([`Streamed`]).
    Streamed(Pieces),
}

struct AsyncStd {
    client: HttpClient,
    /// The requests in flight, polled by the loop itself (no task each). Dropping one closes
    /// its connection.
    requests: Vec<(RequestId, Exchange)>,
    shared: Shared,
    members: SharedMembers,
}

impl Runtime for AsyncStd {
    type Task = RequestId;
    type Reply = Reply;
    type Subscriber = Sender<Event>;

    fn start(&mut self, id: RequestId, request: Request<Vec<u8>>) -> RequestId {
        if request.extensions().get::<Streamed>().is_some() {
            let pieces = self.client.stream(request);
            self.requests.push((id, Exchange::Streamed(pieces)));
            return id;
        }
        let client = self.client.clone();
        let exchange = async move { client.send(request).await };
        self.requests
            .push((id, Exchange::Whole(Box::pin(exchange))));
        id
    }

    fn abort(&mut self, id: RequestId) {
        self.requests.retain(|(started, _)| *started != id);
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

/// What the loop's next turn is for.
enum Next {
    Command(Command),
    Done(RequestId, Result<Response<Vec<u8>>, Failure>),
    Piece(RequestId, Piece),
    Timeout,
}

pub(crate) async fn run(
    lock: Lock,
    client: HttpClient,
    members: SharedMembers,
    shared: Shared,
    mut receiver: Receiver<Input>,
) {
    let mut rt = AsyncStd {
        client,
        requests: Vec::new(),
        shared,
        members,
    };
    let mut driver = Driver::new(lock);
    let mut alarm = Alarm::default();
    // Where the next turn starts polling the streamed requests (taking turns: an endless body
    // cannot starve the others).
    let mut turn = 0usize;
    // Whether the channel has closed (every handle dropped). A closed channel is ready at
    // once and for ever: it is read once (a `Destroy`), never again. The loop may go on after
    // that: a v3 lock revokes its lease before it stops.
    let mut closed = false;
    // Turns taken since the loop last waited (see `BUDGET`).
    let mut busy = 0usize;
    let mut flow = Flow::Continue(None);
    while let Flow::Continue(deadline) = flow {
        busy += 1;
        if busy > BUDGET {
            busy = 0;
            async_std::task::yield_now().await;
        }
        let next = poll_fn(|cx| {
            if !closed {
                if let Poll::Ready(input) = Pin::new(&mut receiver).poll_next(cx) {
                    let Some(Input::Command(command)) = input else {
                        // The handles hold senders: they are all gone. Stop.
                        closed = true;
                        return Poll::Ready(Next::Command(DriverCommand::Destroy));
                    };
                    return Poll::Ready(Next::Command(command));
                }
            }
            for i in 0..rt.requests.len() {
                if let Exchange::Whole(exchange) = &mut rt.requests[i].1 {
                    if let Poll::Ready(outcome) = exchange.as_mut().poll(cx) {
                        return Poll::Ready(Next::Done(rt.requests.swap_remove(i).0, outcome));
                    }
                }
            }
            if alarm.poll(cx, deadline).is_ready() {
                return Poll::Ready(Next::Timeout);
            }
            let n = rt.requests.len();
            for k in 0..n {
                let i = (turn + k) % n;
                let (id, Exchange::Streamed(pieces)) = &mut rt.requests[i] else {
                    continue;
                };
                let id = *id;
                if let Poll::Ready(piece) = Pin::new(pieces).poll_next(cx) {
                    turn = i + 1;
                    match piece {
                        Some(Piece::End(end)) => {
                            rt.requests.swap_remove(i);
                            return Poll::Ready(Next::Piece(id, Piece::End(end)));
                        }
                        Some(piece) => return Poll::Ready(Next::Piece(id, piece)),
                        // Never after its end (which removes it).
                        None => {
                            rt.requests.swap_remove(i);
                            let end = Err(Failure::Lost("no end".to_owned()));
                            return Poll::Ready(Next::Piece(id, Piece::End(end)));
                        }
                    }
                }
            }
            busy = 0; // the loop waits
            Poll::Pending
        });
        flow = match next.await {
            Next::Command(command) => driver.command(&mut rt, command, Instant::now()),
            Next::Done(id, outcome) => driver.response(&mut rt, id, outcome, Instant::now()),
            Next::Piece(id, Piece::Head(head)) => {
                driver.response_head(&mut rt, id, head, Instant::now())
            }
            Next::Piece(id, Piece::Body(chunk)) => {
                driver.response_body(&mut rt, id, &chunk, Instant::now())
            }
            Next::Piece(id, Piece::End(end)) => {
                driver.response_end(&mut rt, id, end, Instant::now())
            }
            Next::Timeout => driver.timeout(&mut rt, Instant::now()),
        };
    }
    // Senders keep the channel, and what is queued in it, alive: close it so later commands
    // fail, and drop the queued ones so their callers get `Destroyed` instead of waiting.
    receiver.close();
    while receiver.try_recv().is_ok() {}
}

/// How many turns the loop takes in a row, each on an input that was ready at once, before it
/// lets its thread run other tasks (as tokio's cooperative budget does for its tasks): an input
/// that is always ready (a flood of commands, a body that never pauses) cannot hold an executor
/// thread for ever.
const BUDGET: usize = 64;

/// One timer for every deadline. Arming an async-io timer wakes the thread that polls the
/// reactor, so it is armed again only for an earlier deadline: for a later one (each new
/// request's), the armed timer fires first and the later deadline is armed then.
#[derive(Default)]
struct Alarm(Option<(Timer, Instant)>);

impl Alarm {
    /// Ready once `deadline` has passed.
    fn poll(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Poll<()> {
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        loop {
            match &mut self.0 {
                Some((timer, at)) if *at <= deadline => {
                    if Pin::new(timer).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.0 = None;
                    if Instant::now() >= deadline {
                        return Poll::Ready(());
                    }
                }
                _ => self.0 = Some((Timer::at(deadline), deadline)),
            }
        }
    }
}

/// The loop, shared by its own task and by the callers waiting for an answer: whoever is woken
/// polls it. Its wake-ups go to the waiting callers, if any, else to the task, so a caller sends
/// its request and reads the answer on its own thread: a wake-up from one thread to another
/// costs more than the rest of the exchange.
pub(crate) struct Driving(Arc<Core>);

/// A caller that keeps its future without polling it must not stall the lock (renewals,
/// events): the task also polls the loop within this delay of a wake-up that went to callers.
const WATCHDOG: Duration = Duration::from_millis(50);

struct Core {
    /// `None` once the loop has ended.
    run: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    /// Woken since the last poll began.
    woken: bool,
    task: Option<Waker>,
    callers: Vec<(u64, Option<Waker>)>,
    last_caller: u64,
    /// Wakes the task; armed by a wake-up that went to callers only.
    watchdog: Option<Timer>,
}

impl Wake for Core {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut wakers = self.wakers();
        let wakers = &mut *wakers;
        wakers.woken = true;
        if wakers.callers.is_empty() {
            wakers.task.iter().for_each(Waker::wake_by_ref);
            return;
        }
        wakers
            .callers
            .iter()
            .flat_map(|c| &c.1)
            .for_each(Waker::wake_by_ref);
        if let (None, Some(task)) = (&wakers.watchdog, &wakers.task) {
            let mut watchdog = Timer::after(WATCHDOG);
            let _ = Pin::new(&mut watchdog).poll(&mut Context::from_waker(task));
            wakers.watchdog = Some(watchdog);
        }
    }
}

impl Core {
    fn wakers(&self) -> MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Polls the loop for the task (`caller: None`) or a caller; `Ready` once it has ended.
    fn poll(self: &Arc<Self>, cx: &mut Context<'_>, caller: Option<u64>) -> Poll<()> {
        {
            let mut wakers = self.wakers();
            let wakers = &mut *wakers;
            match caller {
                Some(id) => {
                    if let Some(c) = wakers.callers.iter_mut().find(|c| c.0 == id) {
                        register(&mut c.1, cx);
                    }
                }
                None => {
                    register(&mut wakers.task, cx);
                    if (wakers.watchdog.as_mut()).is_some_and(|w| Pin::new(w).poll(cx).is_ready()) {
                        wakers.watchdog = None;
                    }
                }
            }
        }
        let (mut run, panicked) = match self.run.try_lock() {
            Ok(run) => (run, false),
            // Another poller has it, and polls again if woken meanwhile.
            Err(TryLockError::WouldBlock) => return Poll::Pending,
            // The loop panicked (in another poller): it has ended.
            Err(TryLockError::Poisoned(e)) => (e.into_inner(), true),
        };
        let Some(future) = run.as_mut() else {
            return Poll::Ready(());
        };
        self.wakers().woken = false;
        let waker = Waker::from(self.clone());
        if panicked || (future.as_mut().poll(&mut Context::from_waker(&waker))).is_ready() {
            // Its end closes its channel and drops its replies, which wakes the callers; the
            // task, if it is not the poller, ends on its next poll.
            *run = None;
            drop(run);
            self.wakers().task.iter().for_each(Waker::wake_by_ref);
            return Poll::Ready(());
        }
        drop(run);
        if self.wakers().woken {
            cx.waker().wake_by_ref(); // woken during the poll: poll again
        }
        Poll::Pending
    }
}

/// Keeps `cx`'s waker in `slot`.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

impl Driving {
    /// Starts the loop (`run`) on its own task.
    pub(crate) fn spawn(run: impl Future<Output = ()> + Send + 'static) -> Driving {
        let core = Arc::new(Core {
            run: Mutex::new(Some(Box::pin(run))),
            wakers: Mutex::default(),
        });
        let task = core.clone();
        async_std::task::spawn(poll_fn(move |cx| task.poll(cx, None)));
        Driving(core)
    }

    /// A caller: from now until it is dropped, the loop's wake-ups go to it (and to the other
    /// callers). Made before its command is sent, so that the command wakes it, not the task.
    pub(crate) fn caller(&self) -> Caller<'_> {
        let mut wakers = self.0.wakers();
        wakers.last_caller += 1;
        let id = wakers.last_caller;
        wakers.callers.push((id, None));
        Caller { core: &self.0, id }
    }
}

impl fmt::Debug for Driving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Driving")
    }
}

/// A caller waiting for its answer, polling the loop meanwhile.
pub(crate) struct Caller<'a> {
    core: &'a Arc<Core>,
    id: u64,
}

impl Caller<'_> {
    /// The answer on `receiver`, polling the loop until it comes.
    pub(crate) async fn wait<T>(self, receiver: &Receiver<T>) -> Result<T, RecvError> {
        let mut listening = None;
        poll_fn(|cx| {
            // Not listening while polling the loop: an answer it sends now wakes no one (waking
            // this very task would cost it a turn of the reactor); it is read right after.
            listening = None;
            let _ = self.core.poll(cx, Some(self.id));
            match receiver.try_recv() {
                Ok(answer) => return Poll::Ready(Ok(answer)),
                Err(TryRecvError::Closed) => return Poll::Ready(Err(RecvError)),
                Err(TryRecvError::Empty) => {}
            }
            let listening = listening.insert(Box::pin(receiver.recv()));
            listening.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for Caller<'_> {
    fn drop(&mut self) {
        let mut wakers = self.core.wakers();
        wakers.callers.retain(|c| c.0 != self.id);
        if wakers.callers.is_empty() && wakers.woken {
            // A wake-up this caller did not poll for: the task takes it.
            wakers.task.iter().for_each(Waker::wake_by_ref);
        }
    }
}
