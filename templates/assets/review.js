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
        details.querySelector("textarea").focus();
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
