// Cerulean Studio: the playground's streaming and the Copy buttons. Everything else works
// without this script. It holds no secret: the CSRF token comes from the page's <meta>, the
// session from an HttpOnly cookie the script cannot read.
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
  }

  // -- Copy buttons (keys page) --
  for (const button of document.querySelectorAll("button.copy")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch (e) {
        field.select();
        button.textContent = "Press Ctrl+C";
      }
    });
  }

  // -- Playground --
  const form = document.getElementById("playground");
  if (!form) return;
  const conversation = document.getElementById("conversation");
  const historyField = document.getElementById("history");
  const message = document.getElementById("message");
  const status = document.getElementById("status");
  const send = document.getElementById("send");
  let history = JSON.parse(historyField.value || "[]");
  // form.action would be the button named "action": read the attribute
  const base = form.getAttribute("action").replace(/\/playground$/, "");

  function settings() {
    const value = (id) => document.getElementById(id).value;
    return {
      deployment: value("deployment"),
      system: value("system"),
      temperature: value("temperature"),
      max_tokens: value("max_tokens"),
      stop: value("stop").split("\n").filter((s) => s.length > 0),
      json_mode: document.getElementById("json_mode").checked,
      messages: history,
    };
  }

  function addMessage(role, text) {
    const item = document.createElement("li");
    item.className = "msg " + role;
    const label = document.createElement("span");
    label.className = "role";
    label.textContent = role;
    const content = document.createElement("div");
    content.className = "content";
    content.textContent = text;
    item.append(label, content);
    conversation.append(item);
    conversation.scrollTop = conversation.scrollHeight;
    return item;
  }

  function errorText(body) {
    try {
      const parsed = JSON.parse(body);
      const error = parsed.error || parsed;
      return error.message || body;
    } catch (e) {
      return body;
    }
  }

  async function stream() {
    const text = message.value.trim();
    if (!text) return;
    history.push({ role: "user", content: text });
    historyField.value = JSON.stringify(history);
    addMessage("user", text);
    message.value = "";
    const answer = addMessage("assistant", "");
    answer.setAttribute("aria-busy", "true");
    const content = answer.querySelector(".content");
    send.disabled = true;
    status.textContent = "Answering…";
    const started = performance.now();
    let first = null;
    let usage = null;
    let reply = "";
    try {
      const response = await post(base + "/api/chat", settings());
      if (response.status === 401) {
        window.location.assign(base + "/sign-in?expired=1");
        return;
      }
      if (!response.ok) {
        throw new Error(errorText(await response.text()));
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message || "the answer failed");
            if (chunk.usage) usage = chunk.usage;
            for (const choice of chunk.choices || []) {
              const piece = choice.delta && choice.delta.content;
              if (piece) {
                if (first === null) first = performance.now() - started;
                reply += piece;
                content.textContent = reply;
              }
            }
          }
        }
      }
      history.push({ role: "assistant", content: reply });
      historyField.value = JSON.stringify(history);
      const stats = document.createElement("p");
      stats.className = "stats";
      const total = Math.round(performance.now() - started);
      const tokens = usage
        ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`
        : "tokens not reported";
      const ttft = first === null ? "" : ` · first token ${Math.round(first)} ms`;
      stats.textContent = `${tokens} · ${total} ms${ttft}`;
      answer.append(stats);
      status.textContent = "";
    } catch (e) {
      history.pop();
      historyField.value = JSON.stringify(history);
      answer.classList.add("failed");
      content.textContent = "Error: " + e.message;
      status.textContent = "The request failed.";
    } finally {
      answer.removeAttribute("aria-busy");
      send.disabled = false;
      message.focus();
    }
  }

  async function viewCode() {
    const response = await post(base + "/api/code", settings());
    if (!response.ok) {
      status.textContent = errorText(await response.text());
      return;
    }
    const code = await response.json();
    document.getElementById("code-python").textContent = code.python;
    document.getElementById("code-curl").textContent = code.curl;
    const section = document.getElementById("code");
    section.hidden = false;
    section.scrollIntoView();
  }

  form.addEventListener("submit", (event) => {
    const action = event.submitter ? event.submitter.value : "send";
    if (action === "send") {
      event.preventDefault();
      stream();
    } else if (action === "code") {
      event.preventDefault();
      viewCode();
    }
  });
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      stream();
    }
  });
})();
