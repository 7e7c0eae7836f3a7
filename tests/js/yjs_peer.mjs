// A JavaScript Yjs peer for cadencia's interop tests: the real `yjs` and `y-protocols`.
//
// stdin/stdout carry frames: a 4-byte big-endian length, then one message. Messages are
// y-protocols messages (0 = sync, 1 = awareness) or test controls: 100 + a JSON command
// (answered with 101 + JSON). Only local edits are pushed to the Python peer.
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { readFileSync } from 'node:fs'

const ROOTS = ['districts', 'plots', 'buildings', 'roads', 'players', 'receipts', 'spends', 'actions']
const doc = new Y.Doc()
const awareness = new awarenessProtocol.Awareness(doc)
awareness.setLocalState(null)

function send (bytes) {
  const head = Buffer.alloc(4)
  head.writeUInt32BE(bytes.length)
  process.stdout.write(Buffer.concat([head, Buffer.from(bytes)]))
}

function reply (obj) {
  send(Buffer.concat([Buffer.from([101]), Buffer.from(JSON.stringify(obj))]))
}

function view () {
  const out = {}
  for (const name of ROOTS) out[name] = doc.getMap(name).toJSON()
  return out
}

doc.on('update', (update, origin) => {
  if (origin === 'python') return // forward local edits only
  const enc = encoding.createEncoder()
  encoding.writeVarUint(enc, 0)
  syncProtocol.writeUpdate(enc, update)
  send(encoding.toUint8Array(enc))
})

function command (cmd) {
  switch (cmd.op) {
    case 'step1': {
      const enc = encoding.createEncoder()
      encoding.writeVarUint(enc, 0)
      syncProtocol.writeSyncStep1(enc, doc)
      send(encoding.toUint8Array(enc))
      return reply({ ok: true })
    }
    case 'json':
      return reply(view())
    case 'set': { // set fields of an entry, creating it as a nested map if absent
      doc.transact(() => {
        const root = doc.getMap(cmd.root)
        let entry = root.get(cmd.key)
        if (!(entry instanceof Y.Map)) {
          entry = new Y.Map()
          root.set(cmd.key, entry)
        }
        for (const [k, v] of Object.entries(cmd.fields)) entry.set(k, v)
      }, 'js')
      return reply({ ok: true })
    }
    case 'delete':
      doc.transact(() => doc.getMap(cmd.root).delete(cmd.key), 'js')
      return reply({ ok: true })
    case 'load': // a file written by `cadencia world export --format yjs`
      Y.applyUpdate(doc, readFileSync(cmd.path), 'python')
      return reply(view())
    case 'presence':
      awareness.setLocalState(cmd.state)
      {
        const enc = encoding.createEncoder()
        encoding.writeVarUint(enc, 1)
        encoding.writeVarUint8Array(enc,
          awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]))
        send(encoding.toUint8Array(enc))
      }
      return reply({ ok: true, clientID: doc.clientID })
    case 'peers': {
      const states = {}
      for (const [id, st] of awareness.getStates()) if (id !== doc.clientID) states[id] = st
      return reply(states)
    }
    default:
      return reply({ error: `unknown op ${cmd.op}` })
  }
}

function handle (msg) {
  if (msg[0] === 100) return command(JSON.parse(Buffer.from(msg.subarray(1)).toString()))
  const dec = decoding.createDecoder(msg)
  const type = decoding.readVarUint(dec)
  if (type === 0) {
    const enc = encoding.createEncoder()
    encoding.writeVarUint(enc, 0)
    syncProtocol.readSyncMessage(dec, enc, doc, 'python')
    if (encoding.length(enc) > 1) send(encoding.toUint8Array(enc))
  } else if (type === 1) {
    awarenessProtocol.applyAwarenessUpdate(awareness, decoding.readVarUint8Array(dec), 'python')
  }
}

let buf = Buffer.alloc(0)
process.stdin.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk])
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
    const n = buf.readUInt32BE(0)
    const msg = new Uint8Array(buf.subarray(4, 4 + n))
    buf = buf.subarray(4 + n)
    handle(msg)
  }
})
process.stdin.on('end', () => process.exit(0))
