// The delivery-log explorer's only script (served from /ui/assets/explorer.js; no build step, nothing external).
// Pages are rendered by the gateway; this adds sign-out, redrive and auto-submitting selects. State-changing requests
// carry the session's CSRF token (from <meta name="csrf-token">) in the x-csrf-token header.
"use strict"

const csrf = () => document.querySelector("meta[name=\"csrf-token\"]")?.getAttribute("content") ?? ""

const post = (url, body) =>
  fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf() },
    body: JSON.stringify(body ?? {})
  })

document.addEventListener("DOMContentLoaded", () => {
  const signOut = document.getElementById("sign-out")
  if (signOut) {
    signOut.addEventListener("click", async () => {
      await post("/ui/logout").catch(() => undefined)
      window.location.assign("/ui")
    })
  }

  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form?.requestSubmit())
  }

  for (const form of document.querySelectorAll("form.redrive")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault()
      const destination = form.dataset.destination ?? ""
      const out = form.querySelector("output")
      const button = form.querySelector("button")
      const reason = form.elements.namedItem("reason")?.value.trim() ?? ""
      if (button) button.disabled = true
      try {
        const res = await post(
          `/ui/destinations/${encodeURIComponent(destination)}/redrive`,
          reason === "" ? {} : { reason }
        )
        const json = await res.json().catch(() => ({}))
        if (out) {
          out.textContent = res.ok
            ? `Redriven: ${json.redriven} event(s). They are retried in the background.`
            : `Failed (${res.status}): ${json.error?.message ?? "unknown error"}`
          out.className = res.ok ? "redrive-result ok" : "redrive-result failed"
        }
      } catch (e) {
        if (out) out.textContent = `Failed: ${e}`
      } finally {
        if (button) button.disabled = false
      }
    })
  }
})
