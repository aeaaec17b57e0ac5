package runtime

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageFsInfo reports the template store first (kubelet reads only the
// first entry, and needs used_bytes set), then the conversion cache.
func (s *Server) ImageFsInfo(ctx context.Context, _ *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	now := time.Now().UnixNano()
	usage := func(bytes, inodes int64, mountpoint string) *runtimeapi.FilesystemUsage {
		return &runtimeapi.FilesystemUsage{
			Timestamp:  now,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mountpoint},
			UsedBytes:  &runtimeapi.UInt64Value{Value: uint64(max(bytes, 0))},
			InodesUsed: &runtimeapi.UInt64Value{Value: uint64(max(inodes, 0))},
		}
	}
	resp := &runtimeapi.ImageFsInfoResponse{}
	b, i, mp, err := s.cfg.Store.Usage(ctx)
	if err != nil {
		s.log.Warn("template store usage", "err", err)
	}
	resp.ImageFilesystems = append(resp.ImageFilesystems, usage(b, i, mp))
	cb, ci, cmp, _ := dirUsage(s.cfg.Builder.Cache.Dir())
	if cmp != mp {
		resp.ImageFilesystems = append(resp.ImageFilesystems, usage(cb, ci, cmp))
	}
	return resp, nil
}
