// A microlock (Node.js) client driven line by line over stdin by tests/tests/node_interop.rs.
//
//   node peer.js <etcd host:port> <key> <node id> <ttl seconds>
//
// stdin:  lock | unlock | renew | quit          (one command per line, run one at a time)
// stdout: result ok | result AlreadyLocked | result LockNotOwned | result error <text>
//         event locked | event unlocked          (microlock's events, whenever they happen)
//         ready                                  (once, when the client exists)
'use strict';
const readline = require('readline');
const Etcd = require('node-etcd');
const microlock = require('microlock');
const Microlock = microlock.default;

const [host, key, nodeId, ttl] = process.argv.slice(2);
const lock = new Microlock(new Etcd([host]), key, nodeId, Number(ttl));
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
