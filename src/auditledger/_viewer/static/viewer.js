// auditledger viewer: local-time toggle and row details. Plain DOM, no framework, no inline
// script (the page's Content-Security-Policy forbids it). Values from the log are only ever
// assigned with textContent, never parsed as HTML.
"use strict";

(function () {
  const body = document.body;
  const root = body.dataset.root || "";
  const workspace = body.dataset.workspace || "";
  const STORE = "auditledger.viewer.localTime";

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function offsetLabel(date) {
    const minutes = -date.getTimezoneOffset();
    const sign = minutes >= 0 ? "+" : "-";
    const abs = Math.abs(minutes);
    return "UTC" + sign + pad(Math.floor(abs / 60)) + ":" + pad(abs % 60);
  }

  function localText(date) {
    return (
      date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
      pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds())
    );
  }

  function utcText(iso) {
    return iso.replace("T", " ").replace(/(\.\d+)?Z$/, "");
  }

  function showTimes(local) {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      const iso = el.getAttribute("datetime");
      el.textContent = local ? localText(new Date(iso)) : utcText(iso);
    });
    const head = document.getElementById("time-head");
    if (head) {
      head.textContent = local ? "Time (local, " + offsetLabel(new Date()) + ")" : "Time (UTC)";
    }
    const toggle = document.getElementById("tz-toggle");
    if (toggle) {
      toggle.setAttribute("aria-pressed", local ? "true" : "false");
      toggle.textContent = local ? "Show UTC" : "Show local time";
    }
  }

  function setupTimeToggle() {
    const toggle = document.getElementById("tz-toggle");
    if (!toggle) return;
    toggle.hidden = false;
    let local = false;
    try {
      local = window.localStorage.getItem(STORE) === "1";
    } catch (e) {
      local = false;
    }
    showTimes(local);
    toggle.addEventListener("click", function () {
      local = toggle.getAttribute("aria-pressed") !== "true";
      try {
        window.localStorage.setItem(STORE, local ? "1" : "0");
      } catch (e) {
        // Private windows may refuse storage; the toggle still works for this page.
      }
      showTimes(local);
    });
  }

  function shown(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    return JSON.stringify(value, null, 2);
  }

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function renderRecord(cell, data) {
    cell.textContent = "";
    const wrap = element("div", "record");
    if (data.diff && data.diff.length) {
      const table = element("table", "diff");
      table.appendChild(element("caption", "", "Previous → new"));
      const head = element("tr");
      ["Setting", "Previous", "New"].forEach(function (name) {
        const th = element("th", "", name);
        th.scope = "col";
        head.appendChild(th);
      });
      const thead = element("thead");
      thead.appendChild(head);
      table.appendChild(thead);
      const tbody = element("tbody");
      data.diff.forEach(function (change) {
        const tr = element("tr", "change-" + change.change);
        tr.appendChild(element("td", "path", change.path || "(value)"));
        tr.appendChild(element("td", "old", change.previous));
        tr.appendChild(element("td", "new", change.new));
        tbody.appendChild(tr);
      });
      table.appendChild(tbody);
      wrap.appendChild(table);
    }
    const list = element("dl", "fields");
    Object.keys(data.event).forEach(function (name) {
      list.appendChild(element("dt", "", name));
      list.appendChild(element("dd", "", shown(data.event[name])));
    });
    wrap.appendChild(list);
    cell.appendChild(wrap);
  }

  function setupRows() {
    document.querySelectorAll("button.open").forEach(function (button) {
      button.addEventListener("click", function () {
        const row = document.getElementById(button.getAttribute("aria-controls"));
        if (!row) return;
        const open = button.getAttribute("aria-expanded") === "true";
        button.setAttribute("aria-expanded", open ? "false" : "true");
        row.hidden = open;
        if (open || row.dataset.loaded) return;
        const cell = row.querySelector("td");
        cell.textContent = "Loading…";
        const url =
          root + "/api/events/" + encodeURIComponent(button.dataset.id) +
          (workspace ? "?workspace=" + encodeURIComponent(workspace) : "");
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (response) {
            if (!response.ok) throw new Error("HTTP " + response.status);
            return response.json();
          })
          .then(function (data) {
            renderRecord(cell, data);
            row.dataset.loaded = "1";
          })
          .catch(function (error) {
            cell.textContent = "Could not load the record (" + error.message + ").";
          });
      });
    });
  }

  setupTimeToggle();
  setupRows();
})();
