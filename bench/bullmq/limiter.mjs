// BullMQ baseline for bench/whatsapp_limiter.py: the same messages through BullMQ's own limiter
// ({max: RATE, duration: 1000}, global across workers), 4 workers x concurrency 10, each job one POST to
// the Exotel stand-in. Env: STANDIN_URL, REDIS_URL, MESSAGES, RATE.
import { Queue, Worker } from "bullmq";

const standin = process.env.STANDIN_URL;
const redisUrl = new URL(process.env.REDIS_URL ?? "redis://127.0.0.1:6379/0");
const messages = Number(process.env.MESSAGES ?? 600);
const rate = Number(process.env.RATE ?? 10);
const connection = {
  host: redisUrl.hostname, port: Number(redisUrl.port || 6379), db: Number(redisUrl.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const name = `bench-wa-${Date.now()}`;
const auth = "Basic " + Buffer.from("test-key:test-token").toString("base64");

const queue = new Queue(name, { connection, prefix: "bench-bull" });
await queue.addBulk(Array.from({ length: messages }, (_, i) => ({
  name: "SEND_MESSAGE", data: { to: "+919876543210", id: `m-${i}` }, opts: { removeOnComplete: true },
})));

let done = 0;
const finished = new Promise((resolve) => {
  const workers = Array.from({ length: 4 }, () => new Worker(name, async (job) => {
    const response = await fetch(`${standin}/v2/accounts/banxway-test/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: auth },
      body: JSON.stringify({ whatsapp: { messages: [{ from: "+911234567890", to: job.data.to,
        custom_data: job.data.id, content: { type: "text", text: { body: "bench" } } }] } }),
    });
    await response.arrayBuffer();
  }, { connection, prefix: "bench-bull", concurrency: 10, limiter: { max: rate, duration: 1000 } }));
  for (const worker of workers) {
    worker.on("completed", async () => {
      done += 1;
      if (done === messages) {
        await Promise.all(workers.map((w) => w.close()));
        resolve();
      }
    });
  }
});
await finished;
await queue.obliterate({ force: true });
await queue.close();
console.error(`bullmq: ${done} jobs done`);
