// The connect flow's last page: tell the app how it ended, then close. The message carries no
// data beyond the outcome, goes only to the flow's exact app origin (never '*'), and is repeated
// on a BroadcastChannel for when Cross-Origin-Opener-Policy has cut the opener. The app treats
// it as a hint and asks the server for the status.
//
// A callback whose state matched no flow comes without a message type: anyone can send such a
// request, so the page tells no other page anything, does not close, and only shows its error.
const data = document.body.dataset;

function showCloseHint() {
  const hint = document.getElementById('close-hint');
  if (hint) hint.hidden = false;
}

function tellTheApp() {
  const message = { type: data.messageType, provider: data.provider };
  if (data.reason) message.reason = data.reason;
  if (window.opener && data.appOrigin) {
    try {
      window.opener.postMessage(message, data.appOrigin);
    } catch (_) {
      // The opener navigated elsewhere; the app still learns the outcome from the server.
    }
  }
  try {
    const channel = new BroadcastChannel('celeste-connect');
    channel.postMessage(message);
    channel.close();
  } catch (_) {
    // No BroadcastChannel: nothing else to do.
  }
  setTimeout(() => {
    window.close();
    // Still open (not a popup, or the browser refused): offer a way back.
    setTimeout(showCloseHint, 400);
  }, 150);
}

if (data.messageType) tellTheApp();
else showCloseHint();
