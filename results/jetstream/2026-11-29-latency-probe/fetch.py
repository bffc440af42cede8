import socket, time, sys, json, urllib.request
pub_a, sub_a, sub_b = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
k=int(sys.argv[4])
def post(port, id, msg):
    r=urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%d/send/%d"%(port,id), data=msg.encode()))
    return json.loads(r.read())
import os
first={}
if sys.argv[5]=="publish":
    for i in range(k):
        for id in range(1,101):
            a=post(pub_a,id,"m%d"%i)
            first.setdefault(id,a["seq"])
    json.dump(first,open("/tmp/js-probe/first.json","w")); sys.exit(0)
first={int(a):b for a,b in json.load(open("/tmp/js-probe/first.json")).items()}
epoch=None
def resume(port,id,since):
    s=socket.create_connection(("127.0.0.1",port))
    t=time.perf_counter()
    s.sendall(b"GET /events/%d HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %s\r\n\r\n"%(id,since.encode()))
    buf=b""; n=0
    while True:
        buf+=s.recv(65536)
        n=buf.count(b"data: m")
        if buf.count(b"id: ")>=k:
            break
    dt=(time.perf_counter()-t)*1e3
    s.close(); return dt, n, b"event: gap" in buf
# epoch from a probe
s=socket.create_connection(("127.0.0.1",sub_a)); s.sendall(b"GET /events/1 HTTP/1.1\r\nHost: x\r\n\r\n")
buf=b""
while b"id: " not in buf: buf+=s.recv(4096)
epoch=buf.split(b"id: ")[1].split(b":")[0].decode(); s.close()
for name,port in (("memory (node A)",sub_a),("fetched (node B)",sub_b)):
    r=[resume(port,id,"%s:%d"%(epoch,first[id])) for id in range(1,101)]
    ts=sorted(x[0] for x in r)
    print("%s: %d resumes of %d messages each: p50 %.2f ms p99 %.2f ms; gaps %d"%(name,len(r),r[0][1],ts[50],ts[98],sum(x[2] for x in r)))
