#!/bin/bash
# Idle-socket flood: 1,200 sockets from 127.0.0.2 that send nothing, against
# campusgw under LimitNOFILE=1024; then a sign-in and /api/alarms from 127.0.0.1.
# usage: scripts/web-abuse/flood.sh target/debug/campusgw   (needs mosquitto, curl, prlimit)
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
client_id = "fdm-$WP"
[web]
listen = "127.0.0.1:$WP"
EOT
mkdir -p $D/data
echo "a long enough password" | $BIN user add op --role operator --password-stdin --data-dir $D/data >/dev/null
prlimit --nofile=1024:1024 $BIN run --config $D/c.toml --log-format json > $D/log 2>&1 &
GPID=$!
sleep 3
echo "fds at start: $(ls /proc/$GPID/fd | wc -l)"
python3 - $WP $GPID $D <<'PY'
import socket, sys, time, os, subprocess, json
wp=int(sys.argv[1]); pid=sys.argv[2]; jar=sys.argv[3]+"/jar"
socks=[]
for i in range(1200):
    s=socket.socket(); s.bind(("127.0.0.2",0))
    try:
        s.connect(("127.0.0.1",wp)); socks.append(s)
    except Exception as e:
        print("connect", i, e); break
time.sleep(2)
print("after 1200 idle sockets from 127.0.0.2: gateway fds", len(os.listdir(f"/proc/{pid}/fd")))
def signed_in():
    t=time.time()
    r=subprocess.run(["curl","-s","-m","10","-o","/dev/null","-w","%{http_code}","-c",jar,"-H","Content-Type: application/json","-d",json.dumps({"username":"op","password":"a long enough password"}),f"http://127.0.0.1:{wp}/api/login"],capture_output=True,text=True)
    r2=subprocess.run(["curl","-s","-m","10","-o","/dev/null","-w","%{http_code}","-b",jar,f"http://127.0.0.1:{wp}/api/alarms"],capture_output=True,text=True)
    return r.stdout, r2.stdout, round((time.time()-t)*1000)
print("sign-in + /api/alarms from 127.0.0.1 (login code, alarms code, ms):", signed_in())
time.sleep(13)
print("13 s later: gateway fds", len(os.listdir(f"/proc/{pid}/fd")), "; sign-in + alarms:", signed_in())
PY
grep -c "Too many open files" $D/log | sed 's/^/log lines "Too many open files": /'
kill $GPID $MPID; wait $GPID 2>/dev/null
rm -rf "$D"
