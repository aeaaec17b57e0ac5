package proxmox

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// TaskError is a Proxmox task that ended in failure: its exit status and the
// tail of its log, where Proxmox says why.
type TaskError struct {
	UPID   string
	Status string
	Log    []string
}

func (e *TaskError) Error() string {
	msg := fmt.Sprintf("task %s failed: %s", taskLabel(e.UPID), e.Status)
	if len(e.Log) > 0 {
		msg += "\n  task log (last lines):\n    " + strings.Join(e.Log, "\n    ")
	}
	return msg
}

func taskLabel(upid string) string {
	f := strings.Split(upid, ":")
	if len(f) >= 8 {
		label := f[5] + " on " + f[1]
		if f[6] != "" {
			label = f[5] + " " + f[6] + " on " + f[1]
		}
		return label
	}
	return upid
}

// taskNode is the node a UPID names: where the task runs, and the only node
// that knows it (proxmox.md §5). Uploads run on the node that received the
// request, whatever node the URL named.
func taskNode(upid string) (string, error) {
	f := strings.Split(upid, ":")
	if len(f) < 8 || f[0] != "UPID" || f[1] == "" {
		return "", fmt.Errorf("malformed UPID %q", upid)
	}
	return f[1], nil
}

var warnings = regexp.MustCompile(`^WARNINGS: \d+$`)

// WaitTask polls a task until it stops. "OK" and "WARNINGS: n" are success
// (PVE::UPID::status_is_error), with the warnings returned; anything else is
// a *TaskError with the log's tail. go-proxmox's Task.Wait gets both wrong
// and ignores ctx between polls.
func (c *Client) WaitTask(ctx context.Context, upid string) (warning string, err error) {
	node, err := taskNode(upid)
	if err != nil {
		return "", err
	}
	path := fmt.Sprintf("/nodes/%s/tasks/%s/status", node, url.PathEscape(upid))
	// Most tasks a pod waits for (start, a linked clone, a small create)
	// end within a second: polls start soon and grow slowly, so that the
	// wait overshoots a task's end by little, at the cost of a few more
	// status requests (about a dozen in the first two seconds).
	delay := 20 * time.Millisecond
	for {
		var st struct {
			Status     string `json:"status"`
			ExitStatus string `json:"exitstatus"`
		}
		if err := c.get(ctx, path, &st); err != nil {
			return "", err
		}
		if st.Status == "stopped" {
			switch {
			case st.ExitStatus == "OK":
				return "", nil
			case warnings.MatchString(st.ExitStatus):
				return st.ExitStatus, nil
			}
			return "", &TaskError{UPID: upid, Status: st.ExitStatus, Log: c.taskLogTail(ctx, node, upid, 15)}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*3/2, 500*time.Millisecond)
	}
}

func (c *Client) taskLogTail(ctx context.Context, node, upid string, n int) []string {
	var lines []struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	if err := c.get(ctx, fmt.Sprintf("/nodes/%s/tasks/%s/log?start=0&limit=5000", node, url.PathEscape(upid)), &lines); err != nil {
		return []string{"(log unavailable: " + err.Error() + ")"}
	}
	var out []string
	for _, l := range lines {
		out = append(out, l.T)
	}
	return out[max(0, len(out)-n):]
}
