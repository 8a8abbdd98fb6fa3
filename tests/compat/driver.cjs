// Drives the official `altogic` client against a running server, for tests/test_altogic_client.py.
//
//   node driver.cjs <envUrl> <clientKey>
//
// Reads one JSON command per line on stdin and answers each with one JSON line on stdout:
//
//   {"client": "laptop", "call": "auth.signInWithEmail", "args": ["ada@example.com", "pw"]}
//   -> {"result": {"user": {...}, "session": {...}, "errors": null},
//       "local": {"session": {...}, "user": {...}}}
//
// "result" is what the method returned; "local" is what the client then keeps in its storage.
// Each client name gets its own createClient(envUrl, clientKey, {localStorage}) on first use,
// like one browser each (a command's "clientKey" replaces the default key of a new client).
// "call" is the method's path on the client: "auth.getUserFromDB", or steps that include
// calls, ["db", ["model", "users"], ["object", id], "update"] for
// db.model("users").object(id).update(...). An argument {"$file": {"base64", "name", "type"}}
// becomes a File.
//
// Two deliberate differences from running the package untouched in Node:
// - `cross-fetch` is mapped to Node's own fetch. In a browser `cross-fetch` is the browser's
//   fetch; in Node it is node-fetch 2, which cannot send a FormData (uploads would go out as
//   the text "[object FormData]"). Node's fetch behaves like the browser's.
// - a call that has not settled within CALL_TIMEOUT_MS answers {"hung": true}: the client never
//   settles when an error body is not JSON (see altogic-api.md section 1), and that must fail a
//   test, not hang it.
"use strict";

const readline = require("node:readline");

const CALL_TIMEOUT_MS = Number(process.env.CALL_TIMEOUT_MS || 15000);
const [envUrl, clientKey] = process.argv.slice(2);

const crossFetch = require.resolve("cross-fetch", { paths: [require.resolve("altogic")] });
const nativeFetch = (...args) => globalThis.fetch(...args);
require.cache[crossFetch] = { id: crossFetch, filename: crossFetch, loaded: true, exports: nativeFetch };
const { createClient } = require("altogic");

/** What a browser's localStorage offers the client, kept in memory. */
class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

const clients = new Map();
function client(name, key) {
  if (!clients.has(name)) {
    const localStorage = new MemoryStorage();
    clients.set(name, { altogic: createClient(envUrl, key || clientKey, { localStorage }), localStorage });
  }
  return clients.get(name);
}

/** The object at `steps` from the client: a name is a property, [name, ...args] a call. */
function target(altogic, steps) {
  let object = altogic;
  for (const step of steps) {
    object = Array.isArray(step) ? object[step[0]](...step.slice(1)) : object[step];
  }
  return object;
}

function argument(value) {
  if (value && typeof value === "object" && value.$file) {
    const { base64, name, type } = value.$file;
    return new File([Buffer.from(base64, "base64")], name, { type });
  }
  return value;
}

function stored(localStorage, key) {
  const text = localStorage.getItem(key);
  return text === null ? null : JSON.parse(text);
}

async function run(command) {
  const { altogic, localStorage } = client(command.client, command.clientKey);
  const steps = Array.isArray(command.call) ? [...command.call] : command.call.split(".");
  const method = steps.pop();
  const on = target(altogic, steps);
  let timer;
  const hung = new Promise((resolve) => { timer = setTimeout(() => resolve({ hung: true }), CALL_TIMEOUT_MS); });
  const call = Promise.resolve(on[method](...(command.args || []).map(argument))).then(
    (result) => ({ result: result === undefined ? null : result }),
    (error) => ({ threw: String(error && error.stack ? error.stack : error) }),
  );
  const outcome = await Promise.race([call, hung]);
  clearTimeout(timer);
  return { ...outcome, local: { session: stored(localStorage, "session"), user: stored(localStorage, "user") } };
}

process.on("unhandledRejection", (reason) => {
  process.stderr.write(`unhandled rejection: ${reason && reason.stack ? reason.stack : reason}\n`);
});

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let answer;
    try {
      answer = await run(JSON.parse(line));
    } catch (error) {
      answer = { threw: String(error && error.stack ? error.stack : error) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  });
});
