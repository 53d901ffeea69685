// mfa's security-key page (the only script mfa-web serves): when the form is sent, it
// hands the challenge mfad made (the data-options of #key-options) to the browser
// (navigator.credentials), then posts the browser's answer back in the form's "response"
// field. It reads nothing else and talks to no other site.
"use strict";
(function () {
  var form = document.getElementById("key-form");
  var holder = document.getElementById("key-options");
  var note = document.getElementById("key-note");
  if (!form || !holder || !note) {
    return;
  }
  function bytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) {
      b64 += "=";
    }
    return Uint8Array.from(atob(b64), function (c) {
      return c.charCodeAt(0);
    });
  }
  function text(buffer) {
    var view = new Uint8Array(buffer);
    var s = "";
    for (var i = 0; i < view.length; i++) {
      s += String.fromCharCode(view[i]);
    }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!window.PublicKeyCredential || !navigator.credentials) {
      note.textContent = "This browser cannot use security keys. Use a code instead.";
      return;
    }
    var adding = holder.getAttribute("data-adding") === "true";
    var options = JSON.parse(holder.getAttribute("data-options")).publicKey;
    options.challenge = bytes(options.challenge);
    var listed = adding ? options.excludeCredentials : options.allowCredentials;
    (listed || []).forEach(function (c) {
      c.id = bytes(c.id);
    });
    if (adding) {
      options.user.id = bytes(options.user.id);
    }
    note.textContent = "Touch your security key now.";
    var asked = adding
      ? navigator.credentials.create({ publicKey: options })
      : navigator.credentials.get({ publicKey: options });
    asked.then(
      function (credential) {
        var r = credential.response;
        var answer = {
          id: credential.id,
          rawId: text(credential.rawId),
          type: credential.type,
          extensions: credential.getClientExtensionResults(),
          response: { clientDataJSON: text(r.clientDataJSON) },
        };
        if (adding) {
          answer.response.attestationObject = text(r.attestationObject);
        } else {
          answer.response.authenticatorData = text(r.authenticatorData);
          answer.response.signature = text(r.signature);
          if (r.userHandle) {
            answer.response.userHandle = text(r.userHandle);
          }
        }
        document.getElementById("key-response").value = JSON.stringify(answer);
        form.submit();
      },
      function (error) {
        note.textContent =
          "The security key did not answer (" + error.name + "). Try again, or use a code.";
      }
    );
  });
})();
