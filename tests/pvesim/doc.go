// Package pvesim simulates the Proxmox VE API that pve-image uses: a
// cluster of nodes behind one HTTPS endpoint, with storages, template
// uploads, worker tasks and LXC containers. Tests run it in-process (New,
// Start, Close); cmd/pvesim serves one for manual trials. With
// Options.RealLXC the containers are real unprivileged LXC containers, made
// and run the way Proxmox does (package pvelxc).
//
// Everything here copies Proxmox's behaviour as read in its source, at the
// commits listed in shared/reference/proxmox.md; "§n" below is a section of
// that file. The API schema (pve-docs apidata.js, §8) gave the parameters,
// enums, limits and permissions. Where the simulator departs from Proxmox,
// the comment at that spot says so.
//
// # Copied
//
// Transport and errors (§5; pve-http-server src/PVE/APIServer/AnyEvent.pm,
// Formatter/Standard.pm; pve-manager PVE/HTTPServer.pm rest_handler):
//   - Base /api2/json; bodies form-encoded (decode_urlencoded, including its
//     habit of cutting a value at an unescaped '=') or JSON; query
//     parameters merged over the body; GET/DELETE take only the query.
//   - Answers {"data": ...} (plus "total" for task logs). Errors carry the
//     message's first line as the HTTP reason phrase; handler errors have
//     the body {"data":null,"message":"...\n"} (libpve-http-server-perl
//     ≥ 5.2.0, fix #6503), parameter errors are 400 "Parameter verification
//     failed." with "errors"; a first line holding a CR becomes an empty 400
//     Bad Request (commit 936007a). The connection is closed after any
//     status ≥ 400 (keep_alive = 0).
//   - Parameter validation with PVE::JSONSchema's messages (pve-common
//     src/PVE/JSONSchema.pm): unknown and missing properties, "requires",
//     enums, patterns, lengths, bounds, integer/number checks, booleans
//     only as 0/1, formats pve-node, pve-vmid, pve-storage-id, dns-name,
//     disk-size, pve-lxc-mp-string and the property strings net[n],
//     features, rootfs, mp[n], with parse_property_string's own errors; an
//     error inside a property string names its key "param.key"
//     (check_object passes the parameter's path down, JSONSchema.pm L1331).
//   - Chunked requests: 501 "chunked transfer encoding not supported"
//     (process_header); non-upload bodies over 512 KiB: 501.
//
// Authentication (§5; HTTPServer.pm auth_handler; pve-access-control
// AccessControl.pm, API2/AccessControl.pm create_ticket; pve-common
// Ticket.pm):
//   - "Authorization: PVEAPIToken=USER@REALM!NAME=SECRET" (or a space
//     after the name), split at the last '='; tokens skip CSRF.
//   - Tickets from POST /access/ticket ("PVE:user:HEXTIME::sig", signed
//     with an HMAC instead of RSA), sent as Cookie PVEAuthCookie or in
//     Authorization; CSRFPreventionToken "HEXTIME:hmac" on every non-GET;
//     renewal with the ticket as password; lifetime Options.TicketLifetime.
//   - Failures: 401 "No ticket", "Authentication failed!" or "Permission
//     denied - invalid csrf token", empty body, after Options.AuthDelay;
//     POST /access/ticket answers 401 "authentication failure".
//   - Uploads skip CSRF but check Datastore.AllocateTemplate before reading
//     the body (403, empty, delayed).
//   - Permission errors "Permission check failed (/path, Priv)"; root-only
//     checks compare the user with the exact string root@pam.
//   - Each method's permission from the schema (§6, pve-apischema.json):
//     upload Datastore.AllocateTemplate; content delete Datastore.Allocate;
//     storage status/content Datastore.Audit or AllocateSpace; template use
//     check_volume_access; CT create VM.Allocate plus Datastore.AllocateSpace
//     on the rootfs storage and VM.Config.* per option
//     (check_ct_modify_config_perm); status and config GET VM.Audit;
//     start/stop/shutdown VM.PowerMgmt; destroy VM.Allocate; config PUT any
//     VM.Config.* plus the per-option checks; node status Sys.Audit; other
//     users' tasks Sys.Audit. Every method, /version included, needs
//     authentication; only POST /access/ticket does not.
//
// Upload (§5; AnyEvent.pm L1280 file_upload_multipart and L1539-1700;
// pve-storage src/PVE/API2/Storage/Status.pm L519 upload; Storage.pm L2483
// normalize_content_filename):
//   - multipart/form-data with Content-Length, streamed into
//     Dir/<entry node>/tmp/pveupload-<hex>.
//   - The order-sensitive parser, rebuilt from its regular expressions:
//     content, checksum-algorithm, checksum (each optional, content also from
//     the query), then the file part named "filename". Misordered checksum
//     fields and unknown text fields before the file end as an empty 400; a
//     file part with another name as 500 "wrong field name ..."; a file part
//     never recognised as 500 "upload failed at ... line 1370.". Parser
//     failures leave the temporary file behind, as pveproxy does.
//   - Normalised names, "wrong file extension" (VZTMPL_EXT_RE_1, Storage.pm
//     L118; plain .tar only from 9.1), file-based storages only, content
//     type check, checksum verification in the imgcopy worker ("checksum
//     mismatch: got '...' != expect '...'"), cp or scp to {node}, silent
//     overwrite, Proxmox's log lines. No proxyto: the UPID names the entry
//     node even for an upload to another node.
//
// Storage (§2; pve-storage Storage.pm, Plugin.pm parse_volname,
// $get_subdir_files, list_volumes, free_image; API2/Storage/Content.pm):
//   - local (dir, "backup,iso,vztmpl", per node), local-lvm (lvmthin,
//     "rootdir,images", no path), shared (nfs, "rootdir,vztmpl", shared).
//   - Storage list/status with the content filter; content list sorted by
//     volid, formats tzst/tgz/txz/tbz2/tar; GET .../content/{volume} with
//     the volume unescaped or escaped (format "raw" for templates, as
//     parse_volname says); DELETE as an imgdel worker whose id is the
//     storage, needing Datastore.Allocate, only warning when the file is
//     already gone; check_volume_access.
//
// Tasks (§5; pve-common PVE/UPID.pm, RESTEnvironment.pm fork_worker;
// pve-manager PVE/API2/Tasks.pm):
//   - UPID:node:PID:PSTART:STARTTIME:type:id:user:; status with exitstatus
//     OK, "WARNINGS: n" (each "WARN:" line) or the error; logs with 1-based
//     line numbers, start/limit, "total", the final "TASK ..." line; stop
//     with DELETE ("received interrupt").
//   - A task exists only on the node that ran it: status elsewhere is 400
//     {"upid":"no such task"}, the log elsewhere one line "unable to open
//     file - No such file or directory".
//   - Non-owners need Sys.Audit (Sys.Modify to stop).
//
// Containers (§1, §3, §6; pve-container src/PVE/API2/LXC.pm create_vm and
// destroy_vm, API2/LXC/Status.pm, API2/LXC/Config.pm update_vm,
// LXC/Config.pm, LXC.pm check_ct_modify_config_perm, vm_stop,
// update_lxc_config; LXC/Setup.pm):
//   - Create: check_vmid_unused across the cluster ("CT N already exists on
//     node 'X'"), VM.Allocate, per-option VM.Config.* and root-only feature
//     checks, template access, the rootfs storage must hold rootdir (400 on
//     "storage"), default storage local, "STORAGE:SIZE" volumes, unprivileged
//     by default from 9.0 (Sys.Modify for privileged), entrypoint, env and
//     host-managed only from 9.1, hwaddr and type=veth added to NICs,
//     defaults hostname CT<vmid>, memory 512, swap 512.
//   - The vzcreate worker allocates the disk, opens the template by its
//     name (compression from the suffix), runs OS detection on it
//     (template.InspectFile, mirroring Setup.pm's autodetection and plugin
//     checks): "unable to detect OS distribution", the "unknown ID" and
//     "got unexpected ostype (detected != given)" warnings, ostype
//     unmanaged skipping detection, architecture from /bin/sh or amd64. Any
//     failure removes disk, container and config ("unable to create CT N -
//     ..."); start=1 then starts it.
//   - Start (errors in the vzstart worker, "CT N already running" at once),
//     stop, shutdown with timeout/forceStop ("container did not stop"),
//     destroy (refused while running unless force, which warns), status,
//     list, config GET (typed values, digest) and PUT (delete, digest,
//     read-only and required options). A NIC's bridge must be one of
//     Options.Bridges when the container starts and when its config is
//     written: "bridge 'x' does not exist". entrypoint and env refuse every
//     control character but the tab (Config.pm L671 and L701).
//   - Bind mount points mp0..mp255 (Config.pm $mp_desc L1001 on
//     $rootfs_desc L345, verify_lxc_mp_string L982, classify_mountpoint
//     L1897, print_ct_mountpoint L1486; API2/LXC.pm create_vm L363-408;
//     LXC.pm check_ct_modify_config_perm L1655): at create, a volume
//     starting with '/' is a bind mount (under /dev/ a device mount);
//     "<path> contains illegal character sequences" for volume and mp;
//     "mount point type bind is only allowed for root@pam" (and "type
//     device") for anyone but the exact user root@pam, its API tokens
//     included; "mount points configured, but 'rootfs' not set -
//     aborting". The config keeps them as print_ct_mountpoint prints them
//     (volume, mp, the other keys sorted, size normalised); GET config
//     shows them.
//   - Mounting them (LXC.pm __mountpoint_mount L2133 with its bind branch
//     L2299, bindmount L2049, walk_tree_nofollow L1929-1978; mount_all
//     L1810; lxc-pve-prestart-hook L91-151 with mountpoint_insert_staged)
//     in foreach_volume's order, mp0 to mp255 by number (pve-guest-common
//     AbstractConfig.pm L467 foreach_volume_full; Config.pm L1979
//     valid_volume_keys): in the vzcreate worker before the template is
//     unpacked ("mounting container failed", then "unable to create CT N -
//     ...") and before every start: "directory '<path>' does not exist",
//     "symlink encountered at: //<host path>" for a symlink in the host
//     path and, with RealLXC, "symlink encountered at: //./<path>" for one
//     (or a non-directory) inside the container, whose missing target
//     directories are made (0755, owned by the container's root); a mount
//     point inside an earlier one is walked through the earlier one's host
//     directory. A failed start ends "startup for container 'N' failed"
//     (monitor_start). Destroy frees volumes only, never a bind-mounted
//     host directory.
//   - A failed real start prints lxc-start's stderr into the task log
//     without LXC's "lxc-start: <vmid>: <file>:" prefixes
//     (print_ct_stderr_log, LXC.pm L3064).
//   - Host-managed NICs (pve-container 6.0.15 = PVE 9.1; LXC.pm
//     update_lxc_config L880-891): unless link_down=1, a static ip, gw,
//     ip6 and gw6 become lxc.net.N.ipv4.address, .ipv4.gateway,
//     .ipv6.address and .ipv6.gateway, with lxc.net.N.flags = up; at start
//     ip6=auto fails "netN: SLAAC is not supported for host-managed network
//     configuration".
//   - GET .../lxc/{vmid}/interfaces (API2/LXC.pm L2982, LXC.pm
//     get_interfaces L1262): VM.Audit; null for a container that does not
//     run (the config is not read: an unknown one is null too); with
//     RealLXC `ip --json a` run by nsenter in the container's network
//     namespace, turned into name, hwaddr, hardware-address, inet, inet6
//     (the family's last address) and ip-addresses. Without RealLXC the
//     answer comes from the config: lo (127.0.0.1/8, ::1/128), then each
//     NIC under its name with its MAC and its static ip and ip6 (none with
//     link_down); a real container would also show an IPv6 link-local
//     address, and its static addresses only once something sets them.
//   - RealLXC: pvelxc.Create unpacks the template as pct does; entrypoint,
//     env, hostname, memory, net0 (with a host-managed NIC's static
//     addresses, so that eth0 really has them and its default route) and
//     the bind mounts go into the LXC config, written anew from the
//     container's config before every start. Server.LXCPath is the LXC
//     path (-P) of a node's containers, each named by its VMID as in
//     /var/lib/lxc/<vmid>. Departures: bind mounts are lxc.mount.entry
//     lines ("<host path> <path> none bind,create=dir[,ro] 0 0"), mounted
//     by LXC where Proxmox's prestart hook mounts them (the effect inside
//     the container is the same); as LXC mounts them from inside the user
//     namespace, the parents of a host directory are made searchable by
//     others (as pvelxc does for its own directories). A bridge of
//     Options.Bridges missing on the host is replaced by a Linux bridge the
//     simulator creates and removes.
//
// Containers that live on (shared/reference/proxmox-lifecycle.md, "L§n";
// lifecycle.go and the files it names; pve-container, pve-storage and
// pve-manager at the commits listed there):
//   - Volume mount points STORAGE:SIZE at create and restore (volumes.go;
//     LXC.pm create_disks, format_disk with root_owner; L§8): a directory
//     per volume standing in for its file system, vm-<owner>-disk-<n> with
//     the owner's lowest free n on the storage, at Proxmox's path on
//     file-based storages; filled with the template's content at its path
//     (keepattrs=1: the directory's owner and mode); mounted into real
//     containers at every start in mp order; freed by destroy when the
//     container owns it, else "ignore deletion of ..., CT N isn't the
//     owner!"; a deleted mpN stays as unusedN; listed in the storage's
//     content with its size.
//   - move_volume to another container (movevolume.go; L§1): Proxmox's
//     refusals (rootfs, unused to used, other node, locks, templates,
//     digests, missing or taken keys, bind mounts, a running source,
//     subvol on directory storages), the rename to the target's next
//     free disk, the config lines, worker id <vmid>-<key>><target>-<key>.
//   - vzdump of one container (backup.go; L§3): "OK" when it is on
//     another node, lock backup, the modes (a stopped container always in
//     stop mode; stop mode shuts a running one down and starts it again;
//     snapshot mode needs every included volume on lvmthin, else "mode
//     failure - some volumes do not support snapshots" and suspend mode;
//     PM VZDump.pm exec_backup_task, PC VZDump/LXC.pm prepare), pct.conf
//     in Proxmox's format (the description encoded) and an empty pct.fw
//     first, the root file system and every volume mount point with
//     backup=1 under its path (Config.pm mountpoint_backup_enabled) by tar
//     under lxc-usernsexec, zstd, gzip or lzo (compress=1; stored lzop
//     blocks, which lzop -d reads), written as .dat and renamed,
//     notes from the notes-template, the log line naming the archive;
//     backups in the storage's content (notes, subtype, vmid, ctime from
//     the name); their deletion with notes and log; extractconfig.
//   - Restore (restore.go; L§2): force over a stopped, unprotected
//     container of this node, VM.Allocate or VM.Backup, a backup volid,
//     storage-only mode (rootfs and volumes from the archive, "unable to
//     detect disk size") or rootfs and mpN given; new disks first, then
//     every volume the old container owns destroyed; the archive
//     unpacked; the config merged as sanitize_and_merge_config does (the
//     parameters win, never mpN, unusedN, rootfs, unprivileged; lxc.*
//     only for root@pam; unique renews MACs); a failure after the disks
//     removes the config ($destroy_config_on_error).
//   - GET /cluster/resources with nodes (SetNodeLoad; figures only with
//     Sys.Audit), guests and storages per node; storages restricted to
//     nodes (RestrictStorage, storage.cfg "nodes"), which other nodes do
//     not list and cannot use; GET /nodes/{node}/dns (cluster.go).
//   - Migration (migrate.go; L§7): "target is local node.", running
//     containers only by restart ("lxc live migration is currently not
//     implemented"), local bind and device mounts refused unless
//     shared=1, volumes of other guests, local volumes copied to the
//     target, the real container moved and started there.
//   - Host-managed DHCP after a start (dhcp.go; L§6): the lease taken in
//     the container's network namespace, resolv.conf written into its
//     root, "DHCP failed - ..." as a warning.
//
// Templates and linked clones (clone.go; L§4; pve-container 6.1.10
// API2/LXC.pm template L1823 and clone_vm L1889-2302, LXC.pm
// template_create L1589, Setup/Base.pm clear_machine_id L569; pve-storage
// 9.1.7 Storage.pm vdisk_clone, vdisk_create_base, vdisk_free,
// LvmThinPlugin.pm create_base, clone_image, volume_has_feature, Plugin.pm
// volume_has_feature and create_base; all read at the pinned commits):
//   - POST .../template: VM.Allocate; under the config lock "CT is locked
//     (x)", "you can't convert a template to a template", "you can't
//     convert a CT to template if the CT is running"; the answer is null,
//     the vztemplate worker's UPID is dropped. The worker: "Template
//     feature is not available for '<volume>'" for a bind mount point;
//     the root disk becomes a base volume: on local-lvm (LVM-thin)
//     base-<vmid>-disk-N (lvrename's log line), on directory storages
//     <vmid>/base-<vmid>-disk-N.raw, renamed and made read-only; then
//     template: 1. Templates do not start ("you can't start a CT if it's a
//     template").
//   - POST .../clone (vzclone worker, task ID the source's VMID; VM.Clone
//     on the source, VM.Allocate on newid, Datastore.AllocateSpace on the
//     storages): the source gets lock: disk at once, so that a concurrent
//     clone fails with 500 "CT is locked (disk)"; newid is taken with
//     lock: create ("CT N already exists on node 'x'"); full defaults to
//     0 for templates; "parameter 'storage' not allowed for linked
//     clones", "snapshot 'x' does not exist", "unable to clone mountpoint
//     'mpN' (type bind)", "Linked clone feature for '<volid>' is not
//     available" (LVM-thin clones base volumes only; directory and NFS
//     storages never: they would make qcow2), "can't clone CT to node 'x'
//     (CT uses local storage)". Every netN gets a new random MAC
//     (BC:24:11:...), the other options are copied, snapshots, pending
//     and template dropped, hostname and description taken from the
//     parameters. The worker logs "creating a clone of container X with
//     ID Y" and "create linked clone of mount point rootfs (<volid>)",
//     makes vm-<newid>-disk-N under the storage's lock (vdisk_clone,
//     Plugin.pm cluster_lock_storage: per node for a local storage,
//     cluster-wide for a shared one), so that clones on one storage take
//     turns for the volume's name and clone (here the overlay's mount,
//     which stands for the clone), runs post_clone_hook (for managed
//     distributions with systemd: /var/lib/dbus/machine-id removed unless
//     a link, /etc/machine-id emptied unless "uninitialized"), drops both
//     locks; a failure frees the new disk and config ("clone failed:
//     ...").
//   - Copy-on-write with RealLXC: a template's unpacked tree moves to a
//     base tree; a clone's rootfs is an overlayfs over it (its writes in
//     its own upper directory, owned by the container's ids as written),
//     mounted at the clone and unmounted by destroy. LVM-thin lets a
//     template go while clones use it (vdisk_free: "LVM-thin allows
//     deletion of still referenced base volumes!"); the base tree stays
//     until its last clone goes.
//   - PUT .../config sets bind mount points of a stopped container for
//     root@pam (update_pct_config; anyone else gets "mount point type bind
//     is only allowed for root@pam"), which is how a linked clone gets its
//     mounts.
//
// # Fault injection
//
// For clients' error handling, beside the faults Proxmox's own behaviour
// gives: FailNextTask (a worker that fails after its partial work),
// DropNextUpload (a connection reset mid-upload), CorruptNextUpload (a
// checksum mismatch), FailNextRequests (an error status in the shape
// Proxmox answers it: pveproxy's 594-599 with no body when it cannot pass a
// call on to a node or to pvedaemon, AnyEvent::HTTP's statuses; any other
// status as a handler exception, {"data":null,"message":...}) and
// ResetNextRequests (a connection reset before any answer, as when a
// pveproxy worker dies). Request faults apply after authentication, as
// pveproxy authenticates before it proxies or runs a handler.
//
// # Left out
//
//   - Full clones ("pvesim: full clones are not simulated"), clones to
//     another node, templates with volume mount points, ZFS, RBD and
//     btrfs storages (whose bases cannot go while clones use them:
//     "base volume '...' is still in use by linked clones"), migrating
//     and restoring over a linked clone (its overlay does not move),
//     hot-plugging bind mount points into a running container ("pvesim:
//     changing 'mpN' is not simulated"), the vztemplate worker's log, the
//     timeout of vdisk_clone's storage lock ("can't lock file ... - got
//     timeout"; here the lock is held for milliseconds).
//   - OCI archives as templates (§4: detected, then refused), registry
//     pull, download-url, snapshots, moves to another storage
//     (move_volume with storage, migrate with target-storage), vzdump of
//     several guests, storage snapshots (snapshot and suspend mode freeze
//     the running container with lxc-freeze while its files are archived,
//     where Proxmox archives a snapshot or an rsync copy; what is archived
//     is the same), LZO compression proper (lzo archives hold stored
//     blocks), PBS, DHCPv6, and restores onto existing volumes.
//   - Device mount points (refused with "pvesim: ... not simulated"),
//     attaching an existing volume at create, changing mpN with PUT
//     config (deleting works), device passthrough (devN), HA, pools,
//     hookscripts.
//   - Of a bind mount's options, mountoptions, acl, quota, idmap and
//     keepattrs are kept in the config but not applied; the check after
//     mounting ("detected mount path change") is not made. At create the
//     simulator makes the target directories but does not mount the host
//     directory while the template is unpacked (in Proxmox, template files
//     below the mount point land in the host directory). A failed
//     prestart hook's message is printed into the start task's log as it
//     is: LXC logs a hook's output at debug level ("Script exec ...
//     produced output: ..."), so Proxmox's log shows it only with debug,
//     and otherwise LXC's "run_buffer: ... Script exited with status 2"
//     lines (seen with LXC 5.0.2).
//   - ACL paths and roles: a user's or token's privileges hold on every
//     path, and a token's are not intersected with its user's; tokens need
//     no user entry; no TFA.
//   - What post_create_hook and pre_start_hook write inside the rootfs
//     (passwords, SSH keys, network, hostname, machine-id), NICs other
//     than net0 with RealLXC. DHCP for host-managed NICs is busybox
//     udhcpc taking one lease (no renewal), and none on the bridges the
//     simulator stands in for (they have no DHCP server). A volume moved
//     to a running container appears at its next start (Proxmox
//     hot-plugs it).
//   - Pending config changes: PUT applies at once (real containers get the
//     change at their next start, as in Proxmox).
//   - Split reads in the multipart parser: the simulator runs it over the
//     first 64 KiB at once, the "head arrives in one piece" case proxmox.md
//     describes. An upload with a wrong Content-Type or a tmpfilename query
//     parameter gets no answer in Proxmox until a timeout; here the
//     connection is closed at once.
//   - Disk space, bandwidth limits, storage activation, the proxying
//     between nodes (an unknown node fails like a failed host lookup).
package pvesim
