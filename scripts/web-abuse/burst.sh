#!/bin/bash
# Sign-in burst: 150 simultaneous wrong guesses for one user from 127.0.0.2
# while a signed-in screen (127.0.0.3) polls /api/alarms; then the real user
# from 127.0.0.4. usage: scripts/web-abuse/burst.sh target/debug/campusgw
BIN=$1
D=$(mktemp -d ${TMPDIR:-/tmp}/campusgw-abuse.XXXX)
MP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
WP=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mosquitto -p $MP >/dev/null 2>&1 &
MPID=$!
cat > $D/c.toml <<EOT
[gateway]
data_dir = "$D/data"
[mqtt]
url = "mqtt://127.0.0.1:$MP"
client_id = "fdb-$WP"
[web]
listen = "127.0.0.1:$WP"
EOT
mkdir -p $D/data
echo "a long enough password" | $BIN user add op --role operator --password-stdin --data-dir $D/data >/dev/null
echo "viewer-password-1" | $BIN user add screen --role viewer --password-stdin --data-dir $D/data >/dev/null
$BIN run --config $D/c.toml --log-format json > $D/log 2>&1 &
GPID=$!
sleep 3
python3 - $WP $GPID $D <<'PY'
import sys, time, json, threading, http.client, sqlite3
wp=int(sys.argv[1]); pid=sys.argv[2]; d=sys.argv[3]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])//1024
def post_login(user, pw, src="127.0.0.1"):
    c=http.client.HTTPConnection("127.0.0.1", wp, timeout=60, source_address=(src,0))
    c.request("POST","/api/login",json.dumps({"username":user,"password":pw}),{"Content-Type":"application/json"})
    r=c.getresponse(); body=r.read(); ck=r.getheader("set-cookie"); c.close(); return r.status, ck
st, ck = post_login("screen","viewer-password-1","127.0.0.3")
cookie=ck.split(";")[0]
screen=http.client.HTTPConnection("127.0.0.1", wp, timeout=60, source_address=("127.0.0.3",0))
def alarms():
    t=time.time(); screen.request("GET","/api/alarms",headers={"Cookie":cookie}); r=screen.getresponse(); r.read(); return (time.time()-t)*1000
base=alarms()
rss0=rss(); codes={}; lock=threading.Lock()
def guess():
    s,_=post_login("op","guess-guess-guess","127.0.0.2")
    with lock: codes[s]=codes.get(s,0)+1
ts=[threading.Thread(target=guess) for _ in range(150)]
t0=time.time()
for t in ts: t.start()
worst=0; peak=rss0
while any(t.is_alive() for t in ts):
    worst=max(worst, alarms()); peak=max(peak, rss())
for t in ts: t.join()
dt=time.time()-t0
db=sqlite3.connect(f"{d}/data/gateway.db")
failed=db.execute("select count(*) from audit where action='login_failed'").fetchone()[0]
real=post_login("op","a long enough password","127.0.0.4")[0]
print(f"150 guesses in {dt:.1f} s: answers {codes}; login_failed in audit (passwords checked): {failed}; RSS {rss0} MB -> peak {peak} MB; signed-in GET /api/alarms {base:.1f} ms before, worst {worst:.1f} ms during; real operator from another address afterwards: {real}")
PY
kill $GPID $MPID; wait $GPID 2>/dev/null
rm -rf "$D"
