//! The page `comet serve --demo` serves at `/`: it subscribes to one id with EventSource and
//! lists messages as they arrive, so a new user can watch `comet send` work.

/// Self-contained (no external scripts or styles). The id comes from `?id=` (default 1); the
/// stream is on the same origin. Hooks for tests and curious users: `#state` and
/// `document.body.dataset.state` (`connecting`, `open`, `reconnecting`), `#messages li`.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>comet demo</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
  code { background: #f2f2f2; padding: 0 .25rem; }
  #state { font-weight: bold; }
  #messages li { margin: .25rem 0; }
  #messages small { color: #777; margin-left: .5rem; }
</style>
</head>
<body data-state="connecting">
<h1>comet demo</h1>
<p>Subscribed to id <code id="id"></code> over Server-Sent Events: <span id="state">connecting</span>.</p>
<p>Publish from a shell: <code id="cmd"></code></p>
<ol id="messages"></ol>
<script>
  const id = (new URLSearchParams(location.search).get("id") || "1").replace(/[^0-9]/g, "") || "1";
  document.getElementById("id").textContent = id;
  document.getElementById("cmd").textContent = "comet send " + id + " 'Hello World'";
  const state = document.getElementById("state");
  const list = document.getElementById("messages");
  function show(s) { state.textContent = s; document.body.dataset.state = s; }
  const events = new EventSource("/events/" + id);
  events.onopen = () => show("open");
  events.onerror = () => show(events.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  events.onmessage = (e) => {
    const item = document.createElement("li");
    item.textContent = e.data;
    const seq = document.createElement("small");
    seq.textContent = "#" + e.lastEventId;
    item.appendChild(seq);
    list.appendChild(item);
  };
  events.addEventListener("gap", () => {
    const item = document.createElement("li");
    item.textContent = "(some messages were missed while disconnected)";
    list.appendChild(item);
  });
</script>
</body>
</html>
"##;
