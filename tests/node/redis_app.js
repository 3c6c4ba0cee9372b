// ioredis the way applications use it: strings and counters, a pipeline, MULTI/EXEC, a
// Lua script (EVAL, then EVALSHA), hashes, expirations, pub/sub, an error.
// `node redis_app.js HOST PORT PROTOCOL` (2 or 3) prints one JSON line per result.
'use strict';
const Redis = require('ioredis');
const { out, fail } = require('./lib');

const [host, port, protocol] = process.argv.slice(2);
const options = { host, port: Number(port), protocol: Number(protocol), maxRetriesPerRequest: 1,
  retryStrategy: () => null };

async function main() {
  const redis = new Redis(options);
  await redis.flushdb();
  await redis.script('FLUSH');  // the script is new to the server, as on a fresh one
  out('set', await redis.set('greeting', 'hello'), await redis.get('greeting'), await redis.get('missing'));
  out('incr', await redis.incr('counter'), await redis.incrby('counter', 41), await redis.decr('counter'));
  out('binary', (await redis.getBuffer(await redis.set('bin', Buffer.from([0, 255, 10, 13])) && 'bin')).toString('hex'));

  // a pipeline: every command in one write, the replies in order
  const pipe = redis.pipeline();
  for (let i = 0; i < 20; i++) pipe.set(`k${i}`, i);
  for (let i = 0; i < 20; i++) pipe.get(`k${i}`);
  out('pipeline', await pipe.exec());

  // MULTI/EXEC, and a transaction that fails to queue a command
  out('multi', await redis.multi().incr('counter').rpush('list', 'a', 'b').lrange('list', 0, -1).exec());
  try {
    await redis.multi().set('x', 1).call('NOSUCHCOMMAND').exec();
    out('bad multi', 'no error');
  } catch (e) {
    out('bad multi', e.name, e.message.split('\n')[0]);
  }

  // a Lua script: defineCommand sends EVAL, then EVALSHA once the connection has it
  redis.defineCommand('addTwice', { numberOfKeys: 1, lua: "return redis.call('INCRBY', KEYS[1], ARGV[1] * 2)" });
  out('lua', await redis.addTwice('counter', 5), await redis.addTwice('counter', 1));
  out('eval', await redis.eval("return {KEYS[1], ARGV[1], 3, redis.status_reply('OK')}", 1, 'key', 'arg'));

  // hashes
  out('hset', await redis.hset('user:1', { name: 'Ada', lang: 'en', visits: 1 }));
  out('hash', await redis.hgetall('user:1'), await redis.hincrby('user:1', 'visits', 2),
    await redis.hmget('user:1', 'name', 'nothing'), await redis.hexists('user:1', 'lang'));
  out('zset', await redis.zadd('scores', 1.5, 'a', 2, 'b'), await redis.zrange('scores', 0, -1, 'WITHSCORES'),
    await redis.zscore('scores', 'a'));
  out('set members', (await redis.smembers('nothing')).sort(), await redis.sadd('tags', 'x', 'y'));

  // expirations
  await redis.set('session', 'token', 'EX', 100);
  const ttl = await redis.ttl('session');
  out('ttl', ttl > 90 && ttl <= 100, await redis.persist('session'), await redis.ttl('session'),
    await redis.pexpire('session', 50000), await redis.ttl('nothing'));

  // an error reply
  try {
    await redis.incr('greeting');
  } catch (e) {
    out('error', e.name, e.message);
  }

  // pub/sub: a subscriber connection, a message published from the other
  const sub = new Redis(options);
  const got = new Promise((resolve) => sub.on('message', (channel, message) => resolve([channel, message])));
  out('subscribe', await sub.subscribe('news'));
  out('publish', await redis.publish('news', 'hi'));
  out('message', await got);
  const pgot = new Promise((resolve) => sub.on('pmessage', (pattern, channel, message) => resolve([pattern, channel, message])));
  out('psubscribe', await sub.psubscribe('n*'));
  out('publish', await redis.publish('nation', 'hey'));
  out('pmessage', await pgot);
  await sub.quit();
  out('quit', await redis.quit());
}

main().catch(fail);
