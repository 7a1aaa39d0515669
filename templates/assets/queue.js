// The queue's list: select all, the count of ticked items, and keys (listed on the page).
// j/k move the cursor down/up the rows · x ticks the cursor's row · X ticks from the last ticked row
// to the cursor · Enter/o opens the item · a approves the ticked items · r rejects them (focuses the
// reason first; Enter submits). Approve and reject go through the bulk form, so they ask to confirm.
// Without this script the page still works: tick boxes and use the buttons.
"use strict";
(function () {
  var table = document.querySelector("table.queue");
  if (!table) {
    return;
  }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var form = document.getElementById("bulk-form");
  var selectAll = document.getElementById("select-all");
  var counter = document.getElementById("selected-count");
  var message = document.getElementById("queue-message");
  var reason = document.getElementById("bulk-reason");
  var cursor = -1;
  var anchor = -1;

  function box(row) {
    return row.querySelector("input[type=checkbox][name=ids]");
  }
  function ticked() {
    return rows.filter(function (row) {
      var b = box(row);
      return b && b.checked;
    });
  }
  function say(text) {
    if (message) {
      message.textContent = text;
      message.hidden = !text;
    }
  }
  function update() {
    var n = ticked().length;
    var selectable = rows.filter(box).length;
    if (counter) {
      counter.hidden = false;
      counter.textContent = n + " selected";
    }
    if (selectAll) {
      selectAll.hidden = false;
      selectAll.checked = selectable > 0 && n === selectable;
      selectAll.indeterminate = n > 0 && n < selectable;
    }
    rows.forEach(function (row) {
      var b = box(row);
      row.classList.toggle("ticked", Boolean(b && b.checked));
    });
  }
  function moveTo(i) {
    if (rows.length === 0) {
      return;
    }
    cursor = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (row, k) {
      row.classList.toggle("cursor", k === cursor);
    });
    rows[cursor].focus();
    rows[cursor].scrollIntoView({ block: "nearest" });
  }
  function tick(i, on) {
    var b = box(rows[i]);
    if (b) {
      b.checked = on;
    }
  }
  function submitWith(buttonId, verb) {
    var n = ticked().length;
    var button = document.getElementById(buttonId);
    if (!form || !button) {
      return false;
    }
    if (n === 0) {
      say("Nothing is ticked: x ticks the row under the cursor, then " + verb + ".");
      return false;
    }
    form.requestSubmit(button);
    return true;
  }

  if (selectAll) {
    selectAll.addEventListener("change", function () {
      rows.forEach(function (row, i) {
        tick(i, selectAll.checked);
      });
      update();
    });
  }
  table.addEventListener("change", function (event) {
    if (event.target.name === "ids") {
      anchor = rows.indexOf(event.target.closest("tr"));
      update();
    }
  });
  // A click in a row puts the cursor there, so the keys carry on from it.
  table.addEventListener("click", function (event) {
    var row = event.target.closest("tbody tr");
    if (row) {
      cursor = rows.indexOf(row);
      rows.forEach(function (r, k) {
        r.classList.toggle("cursor", k === cursor);
      });
    }
  });
  if (reason) {
    // Enter in the reason rejects the ticked items (the form's first button would approve them).
    reason.addEventListener("keydown", function (event) {
      if (event.key === "Enter") {
        event.preventDefault();
        submitWith("reject-selected", "r");
      }
    });
  }
  // Coming back to the page (the browser's back button) may keep boxes ticked.
  window.addEventListener("pageshow", update);
  update();

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var tag = target && target.tagName;
    var textual = tag === "INPUT" && !/^(checkbox|radio|button|submit|reset)$/.test(target.type);
    if (textual || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) {
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    switch (event.key) {
      case "j":
        event.preventDefault();
        moveTo(cursor + 1);
        break;
      case "k":
        event.preventDefault();
        moveTo(cursor < 0 ? 0 : cursor - 1);
        break;
      case "x":
        if (cursor >= 0) {
          event.preventDefault();
          var b = box(rows[cursor]);
          if (b) {
            b.checked = !b.checked;
            anchor = cursor;
            update();
          }
        }
        break;
      case "X":
        if (cursor >= 0) {
          event.preventDefault();
          var from = anchor < 0 ? cursor : anchor;
          var first = box(rows[from]);
          var on = first ? (anchor < 0 ? true : first.checked) : true;
          for (var i = Math.min(from, cursor); i <= Math.max(from, cursor); i++) {
            tick(i, on);
          }
          anchor = cursor;
          update();
        }
        break;
      case "Enter":
      case "o":
        // Enter on a link, button or summary does what it does; on a row it opens the item.
        if (cursor >= 0 && !(event.key === "Enter" && target !== rows[cursor] && target !== document.body)) {
          var link = rows[cursor].querySelector("a.open");
          if (link) {
            event.preventDefault();
            window.location.assign(link.href);
          }
        }
        break;
      case "a":
        if (submitWith("approve-selected", "a")) {
          event.preventDefault();
        }
        break;
      case "r":
        if (reason && ticked().length > 0) {
          event.preventDefault();
          reason.focus();
          say("Type the reason for rejecting " + ticked().length + " item(s), then Enter; Esc to cancel.");
        } else if (reason) {
          say("Nothing is ticked: x ticks the row under the cursor, then r.");
        }
        break;
    }
  });
})();
