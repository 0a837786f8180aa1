// What the Banxway main API does with a job: enqueue it base64-encoded (host.json messageEncoding), or read one.
//   node queue.mjs send <queue> <json>      prints the message id
//   node queue.mjs receive <queue>          prints the decoded body of one message (and deletes it)
import { QueueServiceClient } from "@azure/storage-queue";

const [, , command, queueName, body] = process.argv;
const service = QueueServiceClient.fromConnectionString(process.env.AzureWebJobsStorage);
const queue = service.getQueueClient(queueName);

if (command === "send") {
  await queue.createIfNotExists();
  const sent = await queue.sendMessage(Buffer.from(body, "utf8").toString("base64"));
  process.stdout.write(sent.messageId + "\n");
} else if (command === "receive") {
  const { receivedMessageItems: [message] } = await queue.receiveMessages({ numberOfMessages: 1 });
  if (!message) { process.stderr.write("no message\n"); process.exit(3); }
  process.stdout.write(Buffer.from(message.messageText, "base64").toString("utf8"));
  await queue.deleteMessage(message.messageId, message.popReceipt);
} else {
  process.stderr.write("usage: node queue.mjs send|receive <queue> [json]\n");
  process.exit(2);
}
