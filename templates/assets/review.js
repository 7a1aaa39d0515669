// Keyboard shortcuts for the review page (the list is on the page itself).
// a approve · r reject (focus the reason; Enter submits) · e edit · j/n next · k/p previous.
"use strict";
document.addEventListener("keydown", function (event) {
  var target = event.target;
  var typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
  if (typing) {
    if (event.key === "Escape") {
      target.blur();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.tagName === "TEXTAREA" && target.form) {
      event.preventDefault();
      target.form.requestSubmit();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  var submit = function (id) {
    var form = document.getElementById(id);
    if (form) {
      event.preventDefault();
      form.requestSubmit();
    }
  };
  var follow = function (id) {
    var link = document.getElementById(id);
    if (link) {
      event.preventDefault();
      window.location.assign(link.href);
    }
  };
  switch (event.key) {
    case "a":
      submit("approve-form");
      break;
    case "r": {
      var reason = document.getElementById("reject-reason");
      if (reason) {
        event.preventDefault();
        reason.focus();
      }
      break;
    }
    case "e": {
      var details = document.querySelector("details.edit");
      if (details) {
        event.preventDefault();
        details.open = true;
        details.querySelector("table.rows-editor input, textarea").focus();
      }
      break;
    }
    case "j":
    case "n":
      follow("next");
      break;
    case "k":
    case "p":
      follow("prev");
      break;
  }
});

// Tables of rows (an invoice's line items): each cell is an input; the JSON the form sends is kept in
// step with them. Empty cells are null; cells of a number column are sent as numbers when they read as one.
(function () {
  function cellValue(input) {
    var text = input.value.trim();
    if (text === "") {
      return null;
    }
    if (input.hasAttribute("data-numeric")) {
      var n = Number(text.replace(/,/g, ""));
      if (!Number.isNaN(n)) {
        return n;
      }
    }
    return text;
  }
  function sync(form) {
    var table = form.querySelector("table.rows-editor");
    var rows = Array.prototype.map.call(table.tBodies[0].rows, function (tr) {
      var row = {};
      tr.querySelectorAll("input[data-column]").forEach(function (input) {
        row[input.getAttribute("data-column")] = cellValue(input);
      });
      return row;
    });
    form.querySelector("textarea.rows-json").value = JSON.stringify(rows, null, 2);
  }
  document.querySelectorAll("form.edit-form").forEach(function (form) {
    var table = form.querySelector("table.rows-editor");
    if (!table) {
      return;
    }
    form.querySelector("textarea.rows-json").hidden = true;
    form.addEventListener("input", function () { sync(form); });
    form.addEventListener("click", function (event) {
      if (event.target.classList.contains("remove-row")) {
        var tr = event.target.closest("tr");
        if (tr.parentNode.rows.length > 1) {
          tr.remove();
        } else {
          tr.querySelectorAll("input").forEach(function (input) { input.value = ""; });
        }
        sync(form);
      } else if (event.target.classList.contains("add-row")) {
        var body = table.tBodies[0];
        var template = body.rows[body.rows.length - 1];
        var row = template.cloneNode(true);
        row.querySelectorAll("input").forEach(function (input) { input.value = ""; });
        body.appendChild(row);
        sync(form);
        row.querySelector("input").focus();
      }
    });
  });
})();

// A record's thumbnail that cannot load (the shop's image host is down, or not reachable from the
// reviewer's network) is hidden rather than shown as a broken image.
(function () {
  document.querySelectorAll("img.thumb").forEach(function (img) {
    var hide = function () { img.hidden = true; };
    if (img.complete && img.naturalWidth === 0) {
      hide();
    } else {
      img.addEventListener("error", hide);
    }
  });
})();
