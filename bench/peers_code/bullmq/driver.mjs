// Enqueue driver for BullMQ, the same command line as bench/driver_cli.py:
//
//   node driver.mjs single N          N single Queue.add calls, awaited one by one
//   node driver.mjs bulk N CHUNK      N jobs through Queue.addBulk, CHUNK per call
//   node driver.mjs paced N RATE      N jobs at RATE/s, each carrying its send time
//   node driver.mjs warmup START K    K untimed jobs with indexes START..START+K-1
//
// It prints one JSON line: {"seconds": ...} (single adds the call's "p50_ms" and
// "p99_ms", paced "worst_lag_ms").

import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Queue } from "bullmq";
import { KEEP_COMPLETED, QUEUE, nowUs, redisOptions } from "./common.mjs";

const queue = new Queue(QUEUE, {
  connection: redisOptions(),
  defaultJobOptions: { removeOnComplete: KEEP_COMPLETED },
});

function data(index, sentUs) {
  return sentUs ? { i: index, sent_us: sentUs } : { i: index };
}

async function one(index, sentUs) {
  await queue.add("noop", data(index, sentUs));
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  const numbers = rest.map(Number);
  let report;
  if (command === "single") {
    // Each call is timed too, for the call's p50 and p99 (bench/single_enqueue.py).
    const calls = new Float64Array(numbers[0]);
    const started = performance.now();
    for (let index = 0; index < numbers[0]; index++) {
      const before = performance.now();
      await one(index, 0);
      calls[index] = performance.now() - before;
    }
    const seconds = (performance.now() - started) / 1000;
    calls.sort();
    const at = (share) => calls[Math.min(calls.length - 1, Math.floor(share * calls.length))];
    report = { seconds, p50_ms: at(0.5), p99_ms: at(0.99) };
  } else if (command === "bulk") {
    const [jobs, chunk] = numbers;
    const started = performance.now();
    for (let start = 0; start < jobs; start += chunk) {
      const batch = [];
      for (let index = start; index < Math.min(start + chunk, jobs); index++) {
        batch.push({ name: "noop", data: data(index, 0) });
      }
      await queue.addBulk(batch);
    }
    report = { seconds: (performance.now() - started) / 1000 };
  } else if (command === "paced") {
    // An absolute schedule: a late send is not made up by bunching, the next one
    // keeps its own slot (as body.paced does).
    const [jobs, rate] = numbers;
    const interval = 1000 / rate;
    const started = performance.now();
    let worst = 0;
    for (let index = 0; index < jobs; index++) {
      const lag = performance.now() - (started + index * interval);
      if (lag < 0) {
        await sleep(-lag);
      } else {
        worst = Math.max(worst, lag);
      }
      await one(index, nowUs());
    }
    report = {
      seconds: (performance.now() - started) / 1000,
      worst_lag_ms: Math.round(worst * 100) / 100,
    };
  } else if (command === "warmup") {
    const [start, count] = numbers;
    for (let index = start; index < start + count; index++) {
      await one(index, 0);
    }
    report = { seconds: 0 };
  } else {
    throw new Error(`unknown driver command ${command}`);
  }
  await queue.close();
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
