//! etcd v3 authentication: the token every v3 request carries when the handle has
//! credentials ([`Config::credentials`](crate::Config::credentials)).
//!
//! Every v3 request goes through [`Lock::send`], which hands it here before the adapter sees it:
//!
//! - a token known (this lock's, or one another lock of the same handle got: it is shared with
//!   the members' health, [`Members::sync`](crate::Members::sync)) → the request carries it;
//! - none → the request waits here, and `/v3/auth/authenticate` goes to the same member first.
//!   Its answer decides for every request waiting: a token → they go, carrying it; etcd's
//!   `authentication is not enabled` → they go without one (and so does every later request);
//!   anything else — etcd's `authentication failed` (wrong user or password), an error, a
//!   timeout, a lost connection — is each waiting request's own answer, so each command reads
//!   it as it reads any answer (an `authentication failed` ends it with
//!   [`AuthFailure::AuthenticationFailed`](crate::AuthFailure), a failed member is failed over);
//! - a unary request etcd refuses because of its token (`invalid auth token`: expired, or the
//!   auth store changed; `user name is empty`: authentication was turned on since) is sent
//!   again, once, transparently, with a new token: the command never sees the refusal. A second
//!   refusal is its answer.
//!
//! A watch is not sent again here: etcd refuses a token on a watch by cancelling it (3.5 says
//! `permission denied` for an expired token), which its owner reads as "look again" with a
//! unary request; the token is dropped at once, so that the look authenticates first.
//!
//! Without credentials nothing happens here: requests go without a token, and etcd's `user
//! name is empty` is [`AuthFailure::Unauthorized`](crate::AuthFailure).

use std::collections::BTreeMap;
use std::time::Instant;

use http::{Request, Response};

use crate::lock::{Lock, RequestId};
use crate::wire::v3::{self as wire, Failure, Token};
use crate::{Error, Protocol};

/// This lock's side of authentication: what waits for a token, and what may be sent again.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    /// The authenticate out, and its deadline.
    asking: Option<(RequestId, Instant)>,
    /// Requests waiting for a token, in the order they were made, each with whether it was
    /// refused once already.
    waiting: Vec<(RequestId, Request<Vec<u8>>, bool)>,
    /// Unary requests out with a token: a copy, to send again if etcd refuses the token.
    sent: BTreeMap<RequestId, Sent>,
}

#[derive(Debug)]
struct Sent {
    copy: Request<Vec<u8>>,
    /// The token it carries (`None`: sent without, etcd's authentication being off).
    token: Option<Token>,
    /// Already sent again after a refusal: a second one is the request's answer.
    again: bool,
}

impl Tokens {
    /// When the authenticate out times out.
    pub(crate) fn timer(&self) -> Option<Instant> {
        self.asking.map(|(_, deadline)| deadline)
    }
}

impl Lock {
    /// A request about to go to the adapter (from [`Lock::send`]): `Some` with it to send
    /// now (carrying the token, if one is needed), `None` when it waits here for a token.
    pub(crate) fn authorize(
        &mut self,
        id: RequestId,
        member: usize,
        request: Request<Vec<u8>>,
        now: Instant,
    ) -> Option<Request<Vec<u8>>> {
        self.authorize_again(id, member, request, false, now)
    }

    fn authorize_again(
        &mut self,
        id: RequestId,
        member: usize,
        mut request: Request<Vec<u8>>,
        again: bool,
        now: Instant,
    ) -> Option<Request<Vec<u8>>> {
        if self.config.protocol() != Protocol::V3 || self.config.credentials().is_none() {
            return Some(request);
        }
        let token = if self.members.v3_auth_off() {
            None
        } else {
            let Some(token) = self.members.v3_token().cloned() else {
                self.tokens.waiting.push((id, request, again));
                self.ask_for_token(member, now);
                return None;
            };
            wire::authorize(&mut request, &token);
            Some(token)
        };
        if request.extensions().get::<crate::Streamed>().is_none() {
            let copy = copy(&request);
            self.tokens.sent.insert(id, Sent { copy, token, again });
        }
        Some(request)
    }

    /// Sends `/v3/auth/authenticate` to `member`, unless one is out.
    fn ask_for_token(&mut self, member: usize, now: Instant) {
        if self.tokens.asking.is_some() {
            return;
        }
        let Some(credentials) = self.config.credentials().cloned() else {
            return;
        };
        let id = self.send_unauthorized(member, |e, _| {
            wire::authenticate(e, credentials.user(), credentials.password())
        });
        tracing::debug!(user = credentials.user(), "authenticating (etcd v3)");
        self.tokens.asking = Some((id, now + self.config.request_timeout()));
    }

    /// Whether `id` is the authenticate out.
    pub(crate) fn is_token_request(&self, id: RequestId) -> bool {
        self.tokens.asking.is_some_and(|(asking, _)| asking == id)
    }

    /// The answer to the authenticate (after [`Lock::arrived`] took it out of the requests in
    /// flight).
    pub(crate) fn on_token(&mut self, response: Result<&Response<Vec<u8>>, Error>, now: Instant) {
        self.tokens.asking = None;
        let answer = match &response {
            Ok(response) => wire::parse_auth(response),
            Err(_) => Err(Failure::Protocol(String::new())),
        };
        match answer {
            Ok(token) => {
                tracing::debug!("authenticated (etcd v3)");
                self.members.set_v3_token(Some(token), false, now);
                self.send_waiting(now);
            }
            Err(Failure::AuthNotEnabled(_)) => {
                tracing::debug!("etcd's authentication is off: requests go without a token");
                self.members.set_v3_token(None, true, now);
                self.send_waiting(now);
            }
            // Each waiting request gets this answer as its own.
            Err(_) => {
                let waiting = std::mem::take(&mut self.tokens.waiting);
                for (id, _, _) in waiting {
                    let answer = match &response {
                        Ok(response) => Ok(*response),
                        Err(error) => Err(error.clone()),
                    };
                    self.dispatch_v3(id, answer, false, now);
                }
            }
        }
    }

    /// The authenticate got no answer in time: each waiting request times out with it.
    pub(crate) fn token_timers(&mut self, now: Instant) {
        let Some((id, deadline)) = self.tokens.asking else {
            return;
        };
        if deadline > now {
            return;
        }
        let after = self.config.request_timeout();
        self.request_timed_out(id, now);
        self.on_token(Err(Error::Timeout { after }), now);
    }

    /// Sends what waited for a token.
    fn send_waiting(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.tokens.waiting);
        for (id, request, again) in waiting {
            let member = self.member_of(id);
            if let Some(request) = self.authorize_again(id, member, request, again, now) {
                self.push_request(id, request);
            }
        }
    }

    /// Whether etcd refused `response` to `id` for its token, and `id` goes again with a new
    /// one (then nobody else hears of this answer).
    pub(crate) fn token_refused(
        &mut self,
        id: RequestId,
        response: &Response<Vec<u8>>,
        now: Instant,
    ) -> bool {
        let Some(sent) = self.tokens.sent.remove(&id) else {
            return false;
        };
        let refused = matches!(
            wire::failure_of(response),
            Some(Failure::InvalidToken(_) | Failure::TokenRequired(_))
        );
        if !refused || sent.again || self.config.credentials().is_none() {
            return false;
        }
        // The token it carried (or the lack of one) is no good: nobody of this handle uses it
        // any more (unless another was got since).
        if self.members.v3_token() == sent.token.as_ref() {
            tracing::debug!("etcd refused the token: authenticating again (etcd v3)");
            self.members.set_v3_token(None, false, now);
        }
        let member = self.member_of(id);
        if let Some(request) = self.authorize_again(id, member, sent.copy, true, now) {
            self.push_request(id, request);
        }
        true
    }

    /// A watch of this lock was cancelled by etcd for `failure`: if that may be its token (3.5
    /// says `permission denied` for an expired one), the token is dropped, so that the next
    /// request authenticates first.
    pub(crate) fn watch_refused(&mut self, failure: &Failure, now: Instant) {
        let token_trouble = matches!(
            failure,
            Failure::InvalidToken(_) | Failure::TokenRequired(_) | Failure::PermissionDenied(_)
        );
        if token_trouble && self.members.v3_token().is_some() {
            tracing::debug!("etcd cancelled a watch for its token: authenticating again");
            self.members.set_v3_token(None, false, now);
        }
    }

    /// Forgets `id` (answered, cancelled or given up on): `true` if it was waiting for a token
    /// (the adapter never saw it).
    pub(crate) fn forget_token_request(&mut self, id: RequestId) -> bool {
        self.tokens.sent.remove(&id);
        let before = self.tokens.waiting.len();
        self.tokens.waiting.retain(|(waiting, _, _)| *waiting != id);
        before != self.tokens.waiting.len()
    }
}

/// A copy of a request to send again (its method, URI, headers, body and markers).
fn copy(request: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    if let Some(long_poll) = request.extensions().get::<crate::LongPoll>() {
        copy.extensions_mut().insert(*long_poll);
    }
    copy
}
