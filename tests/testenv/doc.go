// Package testenv starts the real components pve-image's tests run against
// and builds the images they use, so that no test writes its own.
//
//   - Registry: the CNCF Distribution registry binary, on 127.0.0.1 at a
//     random port, optionally behind htpasswd, optionally behind a proxy that
//     counts or tampers with requests.
//   - Images: built in memory with go-containerregistry from hand-written
//     layer tars, pushed to that registry or written as layouts and archives.
//   - Proxmox's extraction: the exact unprivileged tar command of
//     pve-container (proxmox.md §1), run with lxc-usernsexec.
//   - kubelet: a real kubelet v1.37.2 in standalone mode with static pods
//     (StartKubelet), one at a time on a machine.
//
// Tests that need a component this machine lacks skip with a message saying
// what is missing, unless PVE_IMAGE_REQUIRE_ALL=1 (set by .ci/run), which
// turns every such skip into a failure so CI cannot pass by skipping.
package testenv
