// kafkajs the way applications use it: a producer sends keyed messages with headers, a
// consumer in a group reads them back, commits, and leaves the group.
// `node kafka_app.js BOOTSTRAP TAG` prints one JSON line per result.
'use strict';
const { Kafka, logLevel } = require('kafkajs');
const { out, fail } = require('./lib');

const [bootstrap, tag] = process.argv.slice(2);
const topic = `node-${tag}`;
const kafka = new Kafka({ clientId: 'trp-node', brokers: [bootstrap], logLevel: logLevel.NOTHING,
  retry: { retries: 3 } });
const MESSAGES = [0, 1, 2].map((i) => ({ key: `k${i}`, value: `value ${i} ` + 'abc'.repeat(40),
  headers: { h: Buffer.from([0, 1, i]) }, partition: 0 }));

async function main() {
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  for (const message of MESSAGES) {  // one at a time: each acknowledgement in order
    const [ack] = await producer.send({ topic, messages: [message], acks: -1 });
    out('ack', ack.topicName, ack.partition, ack.baseOffset);
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: `g-${tag}`, sessionTimeout: 10000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const consumed = [];
  await new Promise((resolve, reject) => {
    consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        consumed.push([partition, message.offset, message.key.toString(), message.value.toString(),
          message.headers.h.toString('hex')]);
        await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
        if (consumed.length === MESSAGES.length) resolve();
      },
    }).catch(reject);
  });
  for (const c of consumed) out('consumed', ...c);
  await consumer.disconnect();  // LeaveGroup
  out('done');
}

main().catch(fail);
