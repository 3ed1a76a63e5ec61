"""meshgate against an independent Destination controller, by hand: a grpcio server built from
linkerd2-proxy-api's own .proto files answers Get and GetProfile (a 50/50 split of `store`
between two backends, then 100/0), meshgate discovers through it, and curl (HTTP/2 by ALPN, one
connection) sends the requests.

    python3 -m venv /tmp/gvenv && /tmp/gvenv/bin/pip install grpcio grpcio-tools
    meshgate demo --serve                      # note its PKI directory, e.g. /tmp/meshgate-demo-123
    /tmp/gvenv/bin/python tests/interop/destination_grpcio.py /tmp/meshgate-demo-123 target/release/meshgate

The proto files come from the crate in cargo's registry (~/.cargo/registry/src/*/linkerd2-proxy-api-*).
Prints the split seen by curl, meshgate's Destination metrics, and exits 1 on a wrong answer.
"""
import glob, http.server, os, queue, socketserver, subprocess, sys, tempfile, threading, time
from concurrent import futures

D, MESHGATE = sys.argv[1], sys.argv[2]
GW_ID = "linkerd-gateway.linkerd-multicluster.serviceaccount.identity.linkerd.cluster.local"
STORE, WEST = "store.test.svc.cluster.local:8080", "store-west.test.svc.cluster.local:8080"

proto = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/linkerd2-proxy-api-*/proto")))[-1]
gen = tempfile.mkdtemp(prefix="dstpy-")
from grpc_tools import protoc  # noqa: E402
assert protoc.main(["protoc", f"-I{proto}", f"-I{os.path.dirname(protoc.__file__)}/_proto",
                    f"--python_out={gen}", f"--grpc_python_out={gen}"]
                   + [f"{proto}/{p}.proto" for p in ("destination", "http_types", "meta", "net")]) == 0
sys.path.insert(0, gen)
import grpc  # noqa: E402
import destination_pb2 as pb, destination_pb2_grpc as pb_grpc, net_pb2  # noqa: E402


def backend(name):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = f"{name}\n".encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


ports = {STORE: backend("store"), WEST: backend("store-west")}
profiles = {STORE: queue.Queue()}
seen = {"get": [], "profile": [], "context": set()}


def addr(port):
    ip = net_pb2.IPAddress(ipv4=0x7F000001)
    return net_pb2.TcpAddress(ip=ip, port=port)


def split(store, west):
    return pb.DestinationProfile(
        fully_qualified_name="store.test.svc.cluster.local",
        dst_overrides=[pb.WeightedDst(authority=STORE, weight=store),
                       pb.WeightedDst(authority=WEST, weight=west)])


class Destination(pb_grpc.DestinationServicer):
    def Get(self, request, context):
        seen["get"].append(request.path)
        seen["context"].add(request.context_token)
        port = ports.get(request.path)
        if port is None:
            yield pb.Update(no_endpoints=pb.NoEndpoints(exists=False))
        else:
            yield pb.Update(add=pb.WeightedAddrSet(
                addrs=[pb.WeightedAddr(addr=addr(port), weight=10000)],
                metric_labels={"namespace": "test", "service": request.path.split(".")[0]}))
        while context.is_active():
            time.sleep(0.1)

    def GetProfile(self, request, context):
        seen["profile"].append(request.path)
        if request.path != STORE:
            yield pb.DestinationProfile(fully_qualified_name=request.path.rsplit(":", 1)[0])
        else:
            yield split(500, 500)
            while context.is_active():
                try:
                    yield profiles[STORE].get(timeout=0.1)
                except queue.Empty:
                    pass


server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
pb_grpc.add_DestinationServicer_to_server(Destination(), server)
dst_port = server.add_insecure_port("127.0.0.1:0")
server.start()

gw = subprocess.Popen([MESHGATE, "run", "--cert", f"{D}/gateway.crt", "--key", f"{D}/gateway.key",
                       "--trust-anchors", f"{D}/ca.crt", "--listen", "127.0.0.1:0",
                       "--admin-listen", "127.0.0.1:0", "--log-format", "json",
                       "--destination-svc-addr", f"127.0.0.1:{dst_port}"],
                      env={**os.environ, "LINKERD2_PROXY_DESTINATION_CONTEXT": '{"ns":"interop"}'},
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
data = admin = None
for line in gw.stdout:
    if "meshgate serving" in line:
        import json
        fields = json.loads(line)["fields"]
        data, admin = fields["data_addr"], fields["admin_addr"]
        break
threading.Thread(target=lambda: [None for _ in gw.stdout], daemon=True).start()


def curl_many(n):
    port = data.rsplit(":", 1)[1]
    url = f"https://{GW_ID}:{port}/"
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", f"{D}/ca.crt", "--cert", f"{D}/client.crt",
                          "--key", f"{D}/client.key", "--resolve", f"{GW_ID}:{port}:127.0.0.1",
                          "-H", f"l5d-dst-override: {STORE}"] + [url] * n,
                         capture_output=True, text=True, timeout=60).stdout
    counts = {}
    for line in out.split():
        counts[line] = counts.get(line, 0) + 1
    return counts


ok = True
try:
    first = curl_many(200)
    print("50/50 split, 200 requests over one HTTP/2 connection:", first)
    ok &= sum(first.values()) == 200 and 70 <= first.get("store", 0) <= 130
    profiles[STORE].put(split(1000, 0))
    time.sleep(0.5)
    second = curl_many(100)
    print("after the split changed to 100/0:", second)
    ok &= second == {"store": 100}
    ok &= seen["context"] == {'{"ns":"interop"}'}
    print("controller saw Get", sorted(set(seen["get"])), "GetProfile", sorted(set(seen["profile"])),
          "context", seen["context"])
    metrics = subprocess.run(["curl", "-s", f"http://{admin}/metrics"], capture_output=True, text=True).stdout
    for line in metrics.splitlines():
        if line.startswith(("control_destination", "outbound_profile_backend_weight")) or (
                line.startswith("request_total") and "dst_service" in line):
            print(" ", line)
finally:
    gw.terminate()
    gw.wait(10)
    server.stop(0)
print("ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
