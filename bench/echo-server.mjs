// The bare gRPC baseline: a @grpc/grpc-js server with raw Buffer (de)serializers and no work
// per call, run as its own child process exactly like a storage node. Echo answers with the
// request bytes; Reply answers with as many zero bytes as the request's first 4 bytes (u32 LE)
// say, so a baseline call can have the exact request and response sizes of the Loam call it is
// compared with (a get: small request, bigger reply; a save: bigger request, tiny reply).
// Prints {"msg":"ready","port":N} on stdout once it listens on 127.0.0.1 (free port).
import grpc from '@grpc/grpc-js';

const MAX_MESSAGE = 128 * 1024 * 1024;
const raw = (b) => b;
const method = (path) => ({
  path, requestStream: false, responseStream: false,
  requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw,
});
const service = { echo: method('/bench.Echo/Echo'), reply: method('/bench.Echo/Reply') };
const replies = new Map();
function replyOf(size) {
  let b = replies.get(size);
  if (!b) replies.set(size, (b = Buffer.alloc(size)));
  return b;
}

// The same message-size options as a Loam node's server.
const server = new grpc.Server({
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
});
server.addService(service, {
  echo: (call, cb) => cb(null, call.request),
  reply: (call, cb) => cb(null, replyOf(call.request.length >= 4 ? call.request.readUInt32LE(0) : 0)),
});
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`echo-server: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify({ msg: 'ready', port }) + '\n');
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
