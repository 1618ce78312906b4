// The bare gRPC baseline: a @grpc/grpc-js server with raw Buffer (de)serializers and no work
// per call, run as its own child process exactly like a storage node. Echo answers with the
// request bytes; Sink answers with an 8-byte ack (a commit-shaped call: big request, small reply).
// Prints {"msg":"ready","port":N} on stdout once it listens on 127.0.0.1 (free port).
import grpc from '@grpc/grpc-js';

const MAX_MESSAGE = 128 * 1024 * 1024;
const raw = (b) => b;
const method = (path) => ({
  path, requestStream: false, responseStream: false,
  requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw,
});
const service = { echo: method('/bench.Echo/Echo'), sink: method('/bench.Echo/Sink') };
const ACK = Buffer.alloc(8);

// The same message-size options as a Loam node's server.
const server = new grpc.Server({
  'grpc.max_receive_message_length': MAX_MESSAGE,
  'grpc.max_send_message_length': MAX_MESSAGE,
});
server.addService(service, {
  echo: (call, cb) => cb(null, call.request),
  sink: (call, cb) => cb(null, ACK),
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
