package testenv

import (
	"encoding/json"
	"testing"
)

// A pod as kubelet's /pods lists it (trimmed from a real answer).
const podsJSON = `{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[{
 "metadata":{"name":"web-pvit-node","namespace":"default","uid":"2cef2304","annotations":{"kubernetes.io/config.source":"file"}},
 "spec":{"containers":[{"name":"app","image":"reg/web:1"}]},
 "status":{"phase":"Running","podIP":"10.88.0.5","podIPs":[{"ip":"10.88.0.5"}],"startTime":"2026-12-06T01:14:13Z",
  "conditions":[{"type":"Ready","status":"False","reason":"ContainersNotReady","message":"containers with unready status: [app]"}],
  "initContainerStatuses":[{"name":"init","ready":true,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed","startedAt":"2026-12-06T01:14:10Z","finishedAt":"2026-12-06T01:14:11Z"}},"lastState":{}}],
  "containerStatuses":[{"name":"app","image":"reg/web:1","imageID":"sha256:f2","containerID":"pve-image://5588","ready":false,"started":false,"restartCount":2,
   "state":{"waiting":{"reason":"CrashLoopBackOff","message":"back-off 20s restarting failed container"}},
   "lastState":{"terminated":{"exitCode":3,"reason":"Error","startedAt":"2026-12-06T01:14:12Z","finishedAt":"2026-12-06T01:14:13Z"}}}]}}]}`

func TestPodDecoding(t *testing.T) {
	var list struct {
		Items []Pod `json:"items"`
	}
	if err := json.Unmarshal([]byte(podsJSON), &list); err != nil {
		t.Fatal(err)
	}
	k := &Kubelet{NodeName: "pvit-node"}
	p, ok := findPod(list.Items, k.PodName("web"))
	if !ok || p.Metadata.UID != "2cef2304" || p.Metadata.Annotations["kubernetes.io/config.source"] != "file" {
		t.Fatalf("findPod: %v %v", p, ok)
	}
	if _, ok := findPod(list.Items, k.PodName("web-pvit-node")); !ok {
		t.Error("the full static pod name is not found")
	}
	st := p.Status
	if st.Phase != "Running" || st.PodIP != "10.88.0.5" || len(st.PodIPs) != 1 || st.PodIPs[0].IP != "10.88.0.5" || st.StartTime == nil {
		t.Errorf("status: %+v", st)
	}
	if p.Condition("Ready") != "False" || p.Condition("Initialized") != "" {
		t.Errorf("conditions: %+v", st.Conditions)
	}
	app, ok := p.Container("app")
	if !ok || app.RestartCount != 2 || app.Ready || app.State.Waiting == nil || app.State.Waiting.Reason != "CrashLoopBackOff" ||
		app.LastState.Terminated == nil || app.LastState.Terminated.ExitCode != 3 || app.LastState.Terminated.FinishedAt.IsZero() ||
		app.ContainerID != "pve-image://5588" {
		t.Errorf("app: %s", p)
	}
	if init, ok := p.Container("init"); !ok || init.State.Terminated == nil || init.State.Terminated.Reason != "Completed" {
		t.Errorf("init: %+v", init)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/kl-1/root`:           "/tmp/kl-1/root",
		`/tmp/a\040b`:              "/tmp/a b",
		`/tmp/tab\011and\134slash`: "/tmp/tab\tand\\slash",
		`/tmp/trailing\`:           `/tmp/trailing\`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
