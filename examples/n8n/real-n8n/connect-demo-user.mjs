// Connects the demo user `n8n-run` to every provider over HTTP, as a browser would: demo sign-in,
// auth-url (binding cookie), the emulator's consent form, the callback. Prints the user id.
const base = process.argv[2];
const origin = base;
const session = await (await fetch(`${base}/demo/session`, {
  method: 'POST', headers: { 'content-type': 'application/json', origin }, body: JSON.stringify({ user: 'n8n-run' }),
})).json();
for (const provider of ['outlook', 'google', 'dropbox']) {
  const start = await fetch(`${base}/v1/integrations/${provider}/auth-url`, {
    headers: { authorization: `Bearer ${session.access_token}`, origin },
  });
  if (!start.ok) throw new Error(`${provider} auth-url ${start.status} ${await start.text()}`);
  const cookie = start.headers.get('set-cookie').split(';')[0];
  const { auth_url } = await start.json();
  const authorize = new URL(auth_url);
  const page = await fetch(authorize);
  const html = await page.text();
  const account = /name="account" value="([^"]+)"/.exec(html)[1];
  const form = new URLSearchParams(authorize.searchParams);
  form.set('account', account.replaceAll('&amp;', '&'));
  form.set('decision', 'accept');
  const answer = await fetch(`${authorize.origin}${authorize.pathname}`, { method: 'POST', body: form, redirect: 'manual' });
  const callback = await fetch(answer.headers.get('location'), { headers: { cookie }, redirect: 'manual' });
  if (callback.status !== 200) throw new Error(`${provider} callback ${callback.status}`);
}
console.log(session.user_id);
