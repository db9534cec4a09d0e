#!/usr/bin/env node
// A Node.js client for the denylist sidecar, over its Unix socket, with @grpc/grpc-js.
//
//   node denylist_client.js verify TOKEN [TOKEN ...]
//   node denylist_client.js check --issuer ISS [--subject SUB] [--jti JTI] [--session SID] [--kid KID]
//   node denylist_client.js watch TOKEN          (or: watch --issuer ISS --subject SUB [--issued-at IAT])
//   node denylist_client.js status
//
// The socket is --socket, else $DENYLIST_SOCKET, else /var/run/denylist/sidecar.sock.
// The channel is grpc-js's default one for a Unix socket (target "unix:PATH"): nothing
// special is needed to talk to the sidecar.
//
// Every answer is printed as one JSON line, {"rpc": "Verify", "response": {...}}, where
// `response` is the protobuf JSON mapping of the answer with the .proto field names
// (64-bit integers are strings, enums are names) — the same lines the Python example
// prints. `watch` prints {"rpc": "Watch", "open": true} once the sidecar has accepted the
// stream, then one line per RevocationNotice, then {"rpc": "Watch", "end": "OK"}. A failed
// call prints {"rpc": ..., "error": {"code": ..., "message": ...}} and a line on stderr.
//
// Exit status: 0 when every token is valid (verify), the subject is not revoked (check),
// a notice arrived (watch); 2 when the sidecar answered "invalid" or "revoked"; 1 when a
// call failed or the arguments are wrong.
//
// @grpc/proto-loader reads proto/denylist/v1/*.proto at start (from the repository, or
// --proto-dir / $DENYLIST_PROTO_DIR), so there is no generated code.
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const { parseArgs } = require('node:util');

const DEFAULT_SOCKET = '/var/run/denylist/sidecar.sock';
// The repository's proto/ directory, two levels above examples/node/.
const DEFAULT_PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_NEGATIVE = 2;

const USAGE = `usage: node denylist_client.js [--socket PATH] [--target TARGET] [--authority AUTHORITY]
                          [--proto-dir DIR] [--timeout SECONDS] COMMAND ...

commands:
  verify TOKEN [TOKEN ...]    verify tokens (signature, claims, denylist)
  check --issuer ISS [--subject SUB] [--jti JTI] [--session SID] [--kid KID] [--issued-at IAT]
                              is a token with these claims revoked?
  watch TOKEN | watch --issuer ISS (--subject SUB | --session SID) [--issued-at IAT]
                              wait for a revocation matching a token or subject
  status                      the sidecar's readiness and denylist state

options:
  --socket PATH        the sidecar's Unix socket (default: $DENYLIST_SOCKET, else ${DEFAULT_SOCKET})
  --target TARGET      any gRPC target instead of the socket, e.g. 127.0.0.1:50151
  --authority VALUE    send this :authority instead of grpc-js's default
  --proto-dir DIR      directory holding denylist/v1/*.proto (default: $DENYLIST_PROTO_DIR, else ${DEFAULT_PROTO_DIR})
  --timeout SECONDS    deadline of each unary call (default 10)`;

/** A problem that ends the program with a one-line message and exit status 1. */
class ClientError extends Error {}

function parseCommandLine(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      socket: { type: 'string' },
      target: { type: 'string' },
      authority: { type: 'string' },
      'proto-dir': { type: 'string' },
      timeout: { type: 'string', default: '10' },
      issuer: { type: 'string' },
      subject: { type: 'string' },
      jti: { type: 'string' },
      session: { type: 'string' },
      kid: { type: 'string' },
      'issued-at': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) throw new ClientError(`--timeout ${values.timeout}: not a positive number`);
  let issuedAt;
  if (values['issued-at'] !== undefined) {
    if (!/^-?\d+$/.test(values['issued-at'])) {
      throw new ClientError(`--issued-at ${values['issued-at']}: not Unix seconds`);
    }
    issuedAt = values['issued-at'];
  }
  return {
    help: values.help,
    command,
    rest,
    socket: values.socket || process.env.DENYLIST_SOCKET || DEFAULT_SOCKET,
    target: values.target,
    authority: values.authority,
    protoDir: values['proto-dir'] || process.env.DENYLIST_PROTO_DIR || DEFAULT_PROTO_DIR,
    timeoutMs: timeout * 1000,
    issuer: values.issuer,
    subject: values.subject,
    jti: values.jti,
    session: values.session,
    kid: values.kid,
    issuedAt,
  };
}

/** Loads denylist.v1 from the .proto files and returns a Verifier client. */
function connect(args) {
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');
  if (!fs.existsSync(path.join(args.protoDir, 'denylist/v1/verifier.proto'))) {
    throw new ClientError(
      `no denylist/v1/verifier.proto under ${args.protoDir}: pass --proto-dir (or set ` +
        "DENYLIST_PROTO_DIR) to the repository's proto/ directory",
    );
  }
  const definition = protoLoader.loadSync('denylist/v1/verifier.proto', {
    includeDirs: [args.protoDir],
    // The .proto field names, 64-bit integers as strings and enums as names: the
    // protobuf JSON mapping, as the Python example prints it.
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const denylist = grpc.loadPackageDefinition(definition).denylist.v1;
  const target = args.target || `unix:${args.socket}`;
  // grpc-js's default for a Unix socket sends `localhost` as :authority.
  const options = args.authority ? { 'grpc.default_authority': args.authority } : {};
  return { grpc, client: new denylist.Verifier(target, grpc.credentials.createInsecure(), options) };
}

/**
 * google.protobuf.Value, as proto-loader decodes it, to plain JSON. `kind` names the field
 * that is set; protobufjs's built-in Struct types use camelCase names (`stringValue`)
 * whatever `keepCase` says.
 */
function valueToJson(value) {
  const inner = value[value.kind];
  switch (value.kind) {
    case 'structValue':
      return structToJson(inner);
    case 'listValue':
      return (inner.values || []).map(valueToJson);
    case 'numberValue':
    case 'stringValue':
    case 'boolValue':
      return inner;
    default:
      return null;
  }
}

/** google.protobuf.Struct, as proto-loader decodes it, to a plain JSON object. */
function structToJson(struct) {
  const out = {};
  for (const [key, value] of Object.entries(struct.fields || {})) out[key] = valueToJson(value);
  return out;
}

/**
 * A decoded message in the protobuf JSON mapping: unset message fields dropped (proto-loader
 * fills them with null), the virtual oneof fields of proto3 `optional` (`_iat`) dropped,
 * and the claims' payload Struct as plain JSON.
 */
function toJson(message) {
  const out = {};
  for (const [key, value] of Object.entries(message)) {
    if (value === null || value === undefined || key.startsWith('_')) continue;
    if (key === 'payload') out[key] = structToJson(value);
    else if (Array.isArray(value)) out[key] = value.map((v) => (typeof v === 'object' ? toJson(v) : v));
    else if (typeof value === 'object') out[key] = toJson(value);
    else out[key] = value;
  }
  return out;
}

/** Prints one JSON line. */
function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

/** A unary call as a promise, with a deadline. */
function unary(client, method, request, timeoutMs) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + timeoutMs }, (error, answer) =>
      error ? reject(error) : resolve(answer),
    );
  });
}

async function verify(args, client) {
  if (args.rest.length === 0) throw new ClientError('verify needs at least one TOKEN');
  let status = EXIT_OK;
  for (const token of args.rest) {
    const answer = await unary(client, 'Verify', { token }, args.timeoutMs);
    emit({ rpc: 'Verify', response: toJson(answer) });
    if (!answer.valid) status = EXIT_NEGATIVE;
  }
  return status;
}

async function check(args, client) {
  if (!args.issuer) throw new ClientError('check needs --issuer');
  const request = {
    issuer: args.issuer,
    subject: args.subject || '',
    jti: args.jti || '',
    session: args.session || '',
    kid: args.kid || '',
  };
  if (args.issuedAt !== undefined) request.issued_at = args.issuedAt;
  const answer = await unary(client, 'Check', request, args.timeoutMs);
  emit({ rpc: 'Check', response: toJson(answer) });
  return answer.revoked ? EXIT_NEGATIVE : EXIT_OK;
}

function watch(args, client, grpc) {
  let request;
  if (args.rest.length === 1) {
    request = { token: args.rest[0] };
  } else if (args.rest.length === 0 && args.issuer && (args.subject || args.session)) {
    request = { issuer: args.issuer, subject: args.subject || '', session: args.session || '' };
    if (args.issuedAt !== undefined) request.issued_at = args.issuedAt;
  } else {
    throw new ClientError('watch needs one TOKEN, or --issuer with --subject or --session');
  }
  return new Promise((resolve, reject) => {
    // No deadline: a watch lasts as long as the connection it guards.
    const call = client.Watch(request);
    let notices = 0;
    // Response headers arrive once the sidecar has registered the watcher; a refusal
    // (e.g. an invalid token) comes as an error without them.
    call.on('metadata', () => emit({ rpc: 'Watch', open: true }));
    call.on('data', (notice) => {
      notices += 1;
      emit({ rpc: 'Watch', response: toJson(notice) });
    });
    call.on('error', reject);
    call.on('status', (status) => {
      if (status.code !== grpc.status.OK) return; // 'error' reports it.
      emit({ rpc: 'Watch', end: 'OK' });
      resolve(notices > 0 ? EXIT_OK : EXIT_NEGATIVE);
    });
    process.once('SIGINT', () => call.cancel());
  });
}

async function status(args, client) {
  const answer = await unary(client, 'Status', {}, args.timeoutMs);
  emit({ rpc: 'Status', response: toJson(answer) });
  return answer.ready ? EXIT_OK : EXIT_NEGATIVE;
}

const COMMANDS = { verify, check, watch, status };
const RPC_NAMES = { verify: 'Verify', check: 'Check', watch: 'Watch', status: 'Status' };

/** The name of a gRPC status code (14 -> "UNAVAILABLE"), as the Python example prints it. */
function codeName(grpc, code) {
  return Object.keys(grpc.status).find((name) => grpc.status[name] === code) || String(code);
}

async function main(argv) {
  let args;
  try {
    args = parseCommandLine(argv);
  } catch (error) {
    process.stderr.write(`denylist_client: ${error.message}\n${USAGE}\n`);
    return EXIT_FAILED;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT_OK;
  }
  const run = COMMANDS[args.command];
  if (!run) {
    process.stderr.write(`denylist_client: unknown command ${JSON.stringify(args.command)}\n${USAGE}\n`);
    return EXIT_FAILED;
  }
  let grpc;
  let client;
  try {
    ({ grpc, client } = connect(args));
    return await run(args, client, grpc);
  } catch (error) {
    if (error instanceof ClientError) {
      process.stderr.write(`denylist_client: ${error.message}\n`);
      return EXIT_FAILED;
    }
    if (error && error.code === 'MODULE_NOT_FOUND') {
      process.stderr.write(`denylist_client: ${error.message.split('\n')[0]}: run npm ci in ${__dirname}\n`);
      return EXIT_FAILED;
    }
    if (grpc && error && typeof error.code === 'number') {
      const rpc = RPC_NAMES[args.command];
      const code = codeName(grpc, error.code);
      emit({ rpc, error: { code, message: error.details || '' } });
      process.stderr.write(`denylist_client: ${rpc} failed: ${code}: ${error.details || ''}\n`);
      return EXIT_FAILED;
    }
    throw error;
  } finally {
    if (client) client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Let stdout drain before exiting (it may be a pipe).
    process.exitCode = code;
  },
  (error) => {
    process.stderr.write(`denylist_client: ${error && error.stack ? error.stack : error}\n`);
    process.exitCode = EXIT_FAILED;
  },
);
