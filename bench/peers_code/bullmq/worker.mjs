// A BullMQ worker for the bench: `node worker.mjs CONCURRENCY`.
//
// The processor runs the bench's common job body: INCR of the counter and SETBIT of
// the job's index (plus RPUSH of now - sent_us when the job carries its send time)
// in one pipeline, on an ioredis connection of its own, one per process. It runs
// until SIGTERM, then closes the worker (waiting for jobs in flight) and exits.

import { Worker } from "bullmq";
import IORedis from "ioredis";
import { BITMAP_KEY, COUNTER_KEY, LATENCY_KEY, QUEUE, nowUs, redisOptions } from "./common.mjs";

const concurrency = Number(process.argv[2] || 1);
let probe = null;

async function body(job) {
  const started = nowUs();
  probe ??= new IORedis(redisOptions());
  const pipeline = probe.pipeline();
  pipeline.incr(COUNTER_KEY);
  pipeline.setbit(BITMAP_KEY, job.data.i, 1);
  if (job.data.sent_us) {
    pipeline.rpush(LATENCY_KEY, started - job.data.sent_us);
  }
  await pipeline.exec();
}

const worker = new Worker(QUEUE, body, { connection: redisOptions(), concurrency });
worker.on("error", (error) => console.error("worker error", error));
worker.on("failed", (job, error) => console.error(`job ${job?.id} failed`, error));

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await worker.close();
  if (probe) await probe.quit();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.log(`bullmq worker pid ${process.pid} concurrency ${concurrency}`);
