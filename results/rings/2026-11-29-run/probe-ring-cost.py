# Per-ring cost probe: opens N subscribers one by one against a comet on 127.0.0.1:18700
# (publish 18701) started with one connection per ring, and prints the growth of the process
# (smaps_rollup) and of the machine (meminfo) and comet_rings. Usage: probe-ring-cost.py PID N
import socket, time, sys, re, urllib.request
pid=int(sys.argv[1]); n=int(sys.argv[2])
def rss():
    t=open(f"/proc/{pid}/smaps_rollup").read()
    return {k:int(v) for k,v in re.findall(r"^(Rss|Anonymous|Pss_File):\s+(\d+)", t, re.M)}
def meminfo():
    t=open("/proc/meminfo").read()
    return {k:int(v) for k,v in re.findall(r"^(Slab|VmallocUsed|Shmem|KernelStack|PageTables):\s+(\d+)", t, re.M)}
def head(s):
    s.settimeout(5); d=s.recv(4096); assert b"200" in d, d
time.sleep(0.5)
r0=rss(); m0=meminfo(); socks=[]
for i in range(n):
    s=socket.create_connection(("127.0.0.1",18700)); s.sendall(b"GET /events/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i); head(s); socks.append(s)
time.sleep(1)
r1=rss(); m1=meminfo()
m=urllib.request.urlopen("http://127.0.0.1:18701/metrics").read().decode()
rings=sum(int(l.split()[-1]) for l in m.splitlines() if l.startswith("comet_rings{"))
print("rings", rings, "conns", n)
print("process KiB:", {k: r1[k]-r0[k] for k in r0})
print("machine KiB:", {k: m1[k]-m0[k] for k in m0})
