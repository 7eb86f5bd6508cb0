// What the BullMQ driver and worker share: the queue name, the connection to the
// bench's private Redis (BENCH_REDIS_URL) and a wall clock in microseconds that is
// comparable with Python's time.time_ns() // 1000.

import { performance } from "node:perf_hooks";

export const QUEUE = "bench";
export const COUNTER_KEY = "benchprobe:done";
export const BITMAP_KEY = "benchprobe:seen";
export const LATENCY_KEY = "benchprobe:latency_us";
// Completed jobs BullMQ keeps (the newest ones); older ones are deleted as jobs finish.
export const KEEP_COMPLETED = 1000;

export function redisOptions() {
  const url = process.env.BENCH_REDIS_URL;
  if (!url) {
    throw new Error("Set BENCH_REDIS_URL (bench/run.py does) to a Redis the bench may flush.");
  }
  const parsed = new URL(url);
  const db = Number(parsed.pathname.replace("/", "") || 0);
  // BullMQ wants maxRetriesPerRequest: null on connections that block.
  return { host: parsed.hostname, port: Number(parsed.port || 6379), db, maxRetriesPerRequest: null };
}

export function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}
