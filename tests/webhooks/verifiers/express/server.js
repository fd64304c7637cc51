// The seed's Node.js webhook verifier ("Payment Webhooks" > "Node.js Example"), verbatim
// between the two marker lines, run by tests/webhooks/test_seed_verifiers.py.
// WEBHOOK_SECRET comes from the environment, as in the seed; PORT is where to listen
// (127.0.0.1 only). After each answer it prints one line on stdout:
//   answered <status> <event_id or ->
// so the test can see which deliveries the seed's code accepted.

// ---- the seed's example, unchanged ----
const crypto = require('crypto');
const express = require('express');
const app = express();
// Important: Use raw body for signature verification
app.use('/webhooks/payment', express.raw({ type: 'application/json' }));
function verifyWebhookSignature(payload, signature, secret) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(payload)
    .digest('hex');
  const providedSignature = signature.split('=')[1] || signature;
  return crypto.timingSafeEqual(
    Buffer.from(expectedSignature),
    Buffer.from(providedSignature)
  );
}
app.post('/webhooks/payment', (req, res) => {
  const signature = req.headers['x-signature'];
  if (!signature) {
    return res.status(401).json({ error: 'Missing signature' });
  }
  if (!verifyWebhookSignature(req.body, signature, process.env.WEBHOOK_SECRET)) {
    return res.status(401).json({ error: 'Invalid signature' });
  }
  const payload = JSON.parse(req.body);
  const { event, data } = payload;
  switch (event) {
    case 'payment.completed':
      console.log(`Payment completed: ${data.order_id}`);
      // Handle successful payment
      break;
    case 'payment.failed':
      console.log(`Payment failed: ${data.order_id}`);
      // Handle failed payment
      break;
    default:
      console.log(`Unhandled event: ${event}`);
  }
  res.json({ status: 'received' });
});
// ---- end of the seed's example ----

// Test harness (not from the seed): listen on 127.0.0.1:PORT, and report every answer.
const http = require('http');

const port = Number(process.env.PORT);
if (!process.env.WEBHOOK_SECRET || !Number.isInteger(port) || port <= 0) {
  console.error('set WEBHOOK_SECRET and PORT');
  process.exit(2);
}
http.createServer((req, res) => {
  res.on('finish', () => {
    let eventId = '-';
    try {
      eventId = JSON.parse(req.body).event_id || '-';
    } catch (e) {
      eventId = '-';
    }
    process.stdout.write(`answered ${res.statusCode} ${eventId}\n`);
  });
  app(req, res);
}).listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening 127.0.0.1:${port}\n`);
});
