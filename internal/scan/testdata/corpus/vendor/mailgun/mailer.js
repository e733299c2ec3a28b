import formData from 'form-data';
import Mailgun from 'mailgun.js';
import crypto from 'node:crypto';

const mailgun = new Mailgun(formData);
const mg = mailgun.client({ username: 'api', key: process.env.MG_KEY || 'key-@@R::hex:32@@', url: 'https://api.eu.mailgun.net' });

// Template cache entries are named after the template body's digest.
function cacheKeyFor(body) {
  return 'tpl-cache-key-' + crypto.createHash('md5').update(body).digest('hex');
}

export async function sendReceipt(order) {
  const lockName = `lock:key-${order.hash}`;
  return mg.messages.create('mg.shop-eu.io', {
    from: 'Shop <noreply@mg.shop-eu.io>',
    to: [order.email],
    subject: `Receipt ${order.id}`,
    template: 'receipt',
    'h:X-Lock': lockName,
  });
}
