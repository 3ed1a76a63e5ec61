"""grpcio through meshgate, by hand: to an h2c gRPC server (works) and to an HTTP/1-only service
(a clean gRPC error naming the reason, not a hang).

    pip install grpcio
    meshgate demo --serve                      # note its PKI directory, e.g. /tmp/meshgate-demo-123
    python3 -m http.server 18081 --bind 127.0.0.1 &
    D=/tmp/meshgate-demo-123
    meshgate run --cert $D/gateway.crt --key $D/gateway.key --trust-anchors $D/ca.crt \
      --listen 127.0.0.1:18449 --admin-listen 127.0.0.1:18197 \
      --endpoint 'py.test.svc.cluster.local:80=127.0.0.1:18081' \
      --endpoint 'grpc.test.svc.cluster.local:50051=127.0.0.1:18090' &
    python3 tests/interop/grpcio_check.py $D 18449

The script itself serves gRPC on 127.0.0.1:18090 (h2c) and routes by `l5d-dst-override` metadata.
"""
import sys, time
from concurrent import futures
import grpc

D = sys.argv[1]
GW_PORT = int(sys.argv[2])
GW_ID = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
ident = lambda b: b

def echo(request, context):
    return b"echo:" + request

server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
    "echo.Echo", {"Say": grpc.unary_unary_rpc_method_handler(echo, ident, ident)}),))
server.add_insecure_port("127.0.0.1:18090")
server.start()

creds = grpc.ssl_channel_credentials(open(f"{D}/ca.crt", "rb").read(), open(f"{D}/client.key", "rb").read(),
                                     open(f"{D}/client.crt", "rb").read())
def call(authority):
    opts = [("grpc.ssl_target_name_override", GW_ID)]
    with grpc.secure_channel(f"127.0.0.1:{GW_PORT}", creds, options=opts) as ch:
        say = ch.unary_unary("/echo.Echo/Say", request_serializer=ident, response_deserializer=ident)
        start = time.time()
        try:
            reply = say(b"hi", timeout=5, metadata=[("l5d-dst-override", authority)])
            return f"ok {reply!r} in {time.time() - start:.3f}s"
        except grpc.RpcError as e:
            return f"error {e.code()} {e.details()!r} in {time.time() - start:.3f}s"

print("h2c grpc server:", call("grpc.test.svc.cluster.local:50051"))
print("http1-only service:", call("py.test.svc.cluster.local:80"))
print("http1-only again:", call("py.test.svc.cluster.local:80"))
server.stop(0)
