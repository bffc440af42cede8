import socket, time, sys, subprocess, os, statistics
port=int(sys.argv[1]); n=int(sys.argv[2])
s=socket.create_connection(("127.0.0.1",port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lat=[]
buf=b""
for i in range(n):
    body=b"m%d"%i
    req=b"POST /send/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"%(i%100+1,len(body),body)
    t=time.perf_counter(); s.sendall(req)
    while True:
        if b"\r\n\r\n" in buf:
            head,rest=buf.split(b"\r\n\r\n",1)
            cl=int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            if len(rest)>=cl:
                buf=rest[cl:]; break
        buf+=s.recv(65536)
    lat.append((time.perf_counter()-t)*1e6)
    assert head.startswith(b"HTTP/1.1 200"), head
lat.sort()
print("n=%d p50=%.0fus p99=%.0fus max=%.0fus"%(n,lat[n//2],lat[int(n*.99)],lat[-1]))
