// What every client script shares: one JSON line per result, a non-zero exit on failure.
'use strict';

function out(...values) {
  process.stdout.write(JSON.stringify(values) + '\n');
}

function fail(err) {
  process.stderr.write(`node client failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

module.exports = { out, fail };
