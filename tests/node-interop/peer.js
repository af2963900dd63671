// A microlock (Node.js) client driven line by line over stdin by tests/tests/node_interop.rs.
//
//   node peer.js <etcd host:port | https://host:port> <key> <node id> <ttl seconds>
//
// node-etcd's options, from the environment (tests/src/node.rs sets them):
//   MICROLOCK_PEER_CA, MICROLOCK_PEER_CERT, MICROLOCK_PEER_KEY   files for `ca`, `cert`, `key`
//   MICROLOCK_PEER_USER, MICROLOCK_PEER_PASSWORD                 `auth` (HTTP basic)
//
// stdin:  lock | unlock | renew | quit          (one command per line, run one at a time)
// stdout: result ok | result AlreadyLocked | result LockNotOwned | result error <text>
//         event locked | event unlocked          (microlock's events, whenever they happen)
//         ready                                  (once, when the client exists)
'use strict';
const fs = require('fs');
const readline = require('readline');
const Etcd = require('node-etcd');
const microlock = require('microlock');
const Microlock = microlock.default;

const [host, key, nodeId, ttl] = process.argv.slice(2);
const env = process.env;
const options = {};
if (env.MICROLOCK_PEER_CA) options.ca = fs.readFileSync(env.MICROLOCK_PEER_CA);
if (env.MICROLOCK_PEER_CERT) options.cert = fs.readFileSync(env.MICROLOCK_PEER_CERT);
if (env.MICROLOCK_PEER_KEY) options.key = fs.readFileSync(env.MICROLOCK_PEER_KEY);
if (env.MICROLOCK_PEER_USER) {
  options.auth = { user: env.MICROLOCK_PEER_USER, pass: env.MICROLOCK_PEER_PASSWORD || '' };
}
const lock = new Microlock(new Etcd([host], options), key, nodeId, Number(ttl));
lock.on(microlock.events.locked, () => console.log('event locked'));
lock.on(microlock.events.unlocked, () => console.log('event unlocked'));
// microlock also emits its errors as 'error' events; without a listener Node would throw.
lock.on(microlock.events.error, () => {});

function answer(promise) {
  return promise.then(
    () => console.log('result ok'),
    (e) => {
      if (e instanceof microlock.AlreadyLockedError) console.log('result AlreadyLocked');
      else if (e instanceof microlock.LockNotOwnedError) console.log('result LockNotOwned');
      else console.log('result error ' + String(e && (e.errorCode || e.message || e)).replace(/\n/g, ' '));
    }
  );
}

let queue = Promise.resolve();
const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  queue = queue.then(() => {
    switch (line.trim()) {
      case 'lock': return answer(lock.lock());
      case 'unlock': return answer(lock.unlock());
      case 'renew': return answer(lock.renew());
      case 'quit': lock.destroy(); process.exit(0); break;
      default: console.log('result error unknown command ' + JSON.stringify(line));
    }
  });
});
input.on('close', () => { lock.destroy(); process.exit(0); });
console.log('ready');
