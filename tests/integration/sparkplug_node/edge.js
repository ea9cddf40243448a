// An edge node simulated with Eclipse Tahu's JavaScript Sparkplug client (sparkplug-client on
// npm), driven by the test one JSON command a line on stdin; it answers each with a line on
// stdout. Usage: node edge.js <mqtt url> <group> <node> <device>
"use strict";
const readline = require("readline");
const sparkplug = require("sparkplug-client");

const [url, groupId, edgeNode, device] = process.argv.slice(2);
const client = sparkplug.newClient({
  serverUrl: url, groupId, edgeNode, clientId: `edge-${edgeNode}-${process.pid}`,
  username: "", password: "", version: "spBv1.0", publishDeath: true,
});
const say = (line) => process.stdout.write(line + "\n");

function births(state) {
  const now = Date.now();
  client.publishNodeBirth({
    timestamp: now,
    metrics: [
      { name: "Node Control/Rebirth", type: "Boolean", value: false },
      { name: "Status/State", alias: 1, type: "String", value: state, timestamp: now },
      { name: "Power", alias: 2, type: "Double", value: 0.0, timestamp: now },
      { name: "Temperature", alias: 3, type: "Int16", value: -12, timestamp: now },
    ],
  });
  client.publishDeviceBirth(device, {
    timestamp: now,
    metrics: [
      { name: "State", alias: 10, type: "String", value: state, timestamp: now },
      { name: "Count", alias: 11, type: "Int32", value: 0, timestamp: now },
    ],
  });
}

let state = "Idle";
let borns = 0;
client.on("birth", () => { births(state); borns += 1; say(`born ${borns}`); });
client.on("ncmd", (payload) => {
  for (const m of payload.metrics || []) {
    if (m.name === "Node Control/Rebirth" && m.value) { births(state); borns += 1; say(`reborn ${borns}`); }
  }
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  const now = Date.now();
  const metrics = (cmd.metrics || []).map((m) => ({ timestamp: now, ...m }));
  if (cmd.op === "ndata") {
    for (const m of metrics) if (m.alias === 1) state = m.value;
    client.publishNodeData({ timestamp: now, metrics });
  } else if (cmd.op === "ddata") {
    client.publishDeviceData(device, { timestamp: now, metrics });
  } else if (cmd.op === "skip") {
    client.seq += 1; // a message the host never sees: a gap in seq
  } else if (cmd.op === "ddeath") {
    client.publishDeviceDeath(device, { timestamp: now, metrics: [] });
  } else if (cmd.op === "stop") {
    client.stop(); // NDEATH with the birth's bdSeq, then DISCONNECT
    say("ok stop");
    setTimeout(() => process.exit(0), 200);
    return;
  }
  say(`ok ${cmd.op}`);
});
