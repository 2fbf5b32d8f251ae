package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"matchbox.dev/matchbox"
	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
	"matchbox.dev/matchbox/api/storagepb"
)

// The gRPC API is poseidon/matchbox's (services Groups, Profiles,
// Ignition, Generic and Select), wire-compatible with it, for
// terraform-provider-matchbox and other automation written for
// poseidon/matchbox. It writes the same objects as the REST API, through
// the same checks and store (objects.go), and they are served at once.
//
// Where poseidon/matchbox's semantics and the REST API's differ, the gRPC
// API keeps poseidon/matchbox's, which its clients rely on:
//   - references are not checked: a profile may name a template that does
//     not exist yet (terraform-provider-matchbox writes the profile first),
//     a group a profile that does not exist, and a profile or template in
//     use may be deleted (a replaced profile is deleted and written again
//     while its groups still name it); machines meanwhile get the error
//     answer of a missing object, never another group, and the dangling
//     reference is reported as a config problem;
//   - Put creates or replaces, unconditionally; fields the gRPC objects do
//     not have (a profile's release) are not kept by a replace.
//
// Status codes: a missing object is NotFound (Get and Delete; upstream
// answers Unknown to both), a bad object InvalidArgument, a write to an
// object of the data dir FailedPrecondition, a write with a read-role
// certificate PermissionDenied, a group file that does not load and may
// select the machine Unavailable.

// gRPC methods that only read; every other method writes and needs the
// admin role.
var grpcReads = map[string]bool{
	"/rpcpb.Groups/GroupGet":      true,
	"/rpcpb.Groups/GroupList":     true,
	"/rpcpb.Profiles/ProfileGet":  true,
	"/rpcpb.Profiles/ProfileList": true,
	"/rpcpb.Ignition/IgnitionGet": true,
	"/rpcpb.Generic/GenericGet":   true,
	"/rpcpb.Select/SelectGroup":   true,
	"/rpcpb.Select/SelectProfile": true,
}

// GRPCOptions are the server options the gRPC API needs besides its TLS
// credentials: the caller's role checked on every call (from its verified
// client certificate, see matchbox.CertificateRole; a certificate without
// an organizational unit is admin, as every client certificate is to
// poseidon/matchbox), messages bounded by Config.MaxBody, observe (may be
// nil) told of every call's method and status code, and verify (may be
// nil) asked about the caller's verified chains at every call (a
// revocation list: a certificate revoked while its connection stays open
// is refused, PermissionDenied).
func (s *Server) GRPCOptions(observe func(method string, code codes.Code), verify func([][]*x509.Certificate) error) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(s.cfg.MaxBody) + 64<<10),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			// A call that panics fails alone, as an HTTP request does,
			// rather than taking the server (DHCP, TFTP, boot) down.
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("gRPC call panicked", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
					resp, err = nil, status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
					if observe != nil {
						observe(info.FullMethod, codes.Internal)
					}
				}
			}()
			resp, err = s.grpcCall(ctx, req, info, h, verify)
			if observe != nil {
				observe(info.FullMethod, status.Code(err))
			}
			return resp, err
		}),
	}
}

// RegisterGRPC registers the gRPC API's services on gs, which must have
// been made with GRPCOptions.
func (s *Server) RegisterGRPC(gs *grpc.Server) {
	g := &grpcAPI{s: s}
	rpcpb.RegisterGroupsServer(gs, groupsRPC{grpcAPI: g})
	rpcpb.RegisterProfilesServer(gs, profilesRPC{grpcAPI: g})
	rpcpb.RegisterIgnitionServer(gs, ignitionRPC{grpcAPI: g})
	rpcpb.RegisterGenericServer(gs, genericRPC{grpcAPI: g})
	rpcpb.RegisterSelectServer(gs, selectRPC{grpcAPI: g})
}

type grpcCaller struct{}

// grpcCall authenticates and authorises one call, then runs it.
func (s *Server) grpcCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler, verify func([][]*x509.Certificate) error) (any, error) {
	p, _ := peer.FromContext(ctx)
	var cert *x509.Certificate
	var chains [][]*x509.Certificate
	if p != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			chains = ti.State.VerifiedChains
			cert = chains[0][0]
		}
	}
	remote := ""
	if p != nil && p.Addr != nil {
		remote = p.Addr.String()
	}
	if cert == nil {
		// The listener requires a verified certificate; this is a server
		// set up without it.
		s.lines.Log(ctx, slog.LevelWarn, "gRPC call without a verified client certificate refused", remote, "method", info.FullMethod, "remote", remote)
		return nil, status.Error(codes.Unauthenticated, "a client certificate signed by the -ca-file CA is required")
	}
	cn := matchbox.Quote(cert.Subject.CommonName)
	if verify != nil {
		if err := verify(chains); err != nil {
			s.lines.Log(ctx, slog.LevelWarn, "gRPC client certificate refused", cn, "cn", cn, "method", info.FullMethod, "remote", remote, "reason", err)
			return nil, status.Errorf(codes.PermissionDenied, "client certificate CN=%s refused: %v", cn, err)
		}
	}
	role, err := matchbox.CertificateRole(cert.Subject.OrganizationalUnit, matchbox.RoleAdmin)
	if err != nil {
		s.lines.Log(ctx, slog.LevelWarn, "gRPC client certificate refused", cn, "cn", cn, "method", info.FullMethod, "remote", remote, "reason", err)
		return nil, status.Errorf(codes.PermissionDenied, "client certificate CN=%s refused: %v", cn, err)
	}
	if role != matchbox.RoleAdmin && !grpcReads[info.FullMethod] {
		s.lines.Log(ctx, slog.LevelWarn, "gRPC write refused: the client certificate has role read", cn+" "+info.FullMethod, "cn", cn, "method", info.FullMethod, "remote", remote)
		return nil, status.Errorf(codes.PermissionDenied, "client certificate CN=%s has role read; %s needs admin", cn, info.FullMethod)
	}
	return h(context.WithValue(ctx, grpcCaller{}, "cert:"+cert.Subject.CommonName), req)
}

// grpcAPI implements the services over the API's server.
type grpcAPI struct{ s *Server }

// write is how the gRPC API writes: unconditional, references unchecked.
func (g *grpcAPI) write(ctx context.Context) writeMode {
	who, _ := ctx.Value(grpcCaller{}).(string)
	return writeMode{who: who}
}

// grpcError maps an error to the gRPC status that says what it is.
func (g *grpcAPI) grpcError(ctx context.Context, method string, err error) error {
	switch {
	case err == nil:
		return nil
	case isReadOnly(err):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, matchbox.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, matchbox.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, matchbox.ErrConflict), errors.Is(err, matchbox.ErrPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, matchbox.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	who, _ := ctx.Value(grpcCaller{}).(string)
	g.s.log.Error("gRPC call failed", "method", method, "token", who, "err", err)
	return status.Error(codes.Internal, "internal error: "+err.Error())
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{matchbox.ErrInvalid}, a...)...)
}

// Conversions between the gRPC objects and ours.

func groupFromPB(in *storagepb.Group) (*matchbox.Group, error) {
	if in == nil {
		return nil, invalid("the request has no group")
	}
	g := &matchbox.Group{ID: in.GetId(), Name: in.GetName(), Profile: in.GetProfile(), Selector: in.GetSelector()}
	if meta := bytes.TrimSpace(in.GetMetadata()); len(meta) > 0 && !bytes.Equal(meta, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(meta))
		if err := dec.Decode(&g.Metadata); err != nil {
			return nil, invalid("group %q: metadata is not a JSON object: %v", g.ID, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, invalid("group %q: metadata: trailing data after the JSON object", g.ID)
		}
		if g.Metadata == nil {
			return nil, invalid("group %q: metadata is not a JSON object", g.ID)
		}
	}
	return g, nil
}

func groupToPB(g *matchbox.Group) *storagepb.Group {
	meta, err := json.Marshal(g.MetadataMap())
	if err != nil || string(meta) == "null" {
		meta = []byte("{}")
	}
	return &storagepb.Group{Id: g.ID, Name: g.Name, Profile: g.Profile, Selector: g.SelectorMap(), Metadata: meta}
}

func profileFromPB(in *storagepb.Profile) (*matchbox.Profile, error) {
	if in == nil {
		return nil, invalid("the request has no profile")
	}
	if in.GetId() == "" {
		return nil, invalid("profile has no id")
	}
	p := &matchbox.Profile{ID: in.GetId(), Name: in.GetName(), IgnitionID: in.GetIgnitionId(), CloudID: in.GetCloudId(), GenericID: in.GetGenericId()}
	if b := in.GetBoot(); b != nil {
		p.Boot = matchbox.Boot{Kernel: b.GetKernel(), Initrd: b.GetInitrd(), Args: b.GetArgs()}
	}
	return p, nil
}

// profileToPB always sets boot: clients read its fields without checking.
func profileToPB(p *matchbox.Profile) *storagepb.Profile {
	return &storagepb.Profile{Id: p.ID, Name: p.Name, IgnitionId: p.IgnitionID, CloudId: p.CloudID, GenericId: p.GenericID,
		Boot: &storagepb.NetBoot{Kernel: p.Boot.Kernel, Initrd: p.Boot.Initrd, Args: p.Boot.Args}}
}

// Objects read: the database's, else the data dir's (read-only).

func (g *grpcAPI) group(ctx context.Context, id string) (*matchbox.Group, error) {
	if id == "" {
		return nil, invalid("the request has no group id")
	}
	grp, _, err := g.s.cfg.Store.GroupVersion(ctx, id)
	if errors.Is(err, matchbox.ErrNotFound) {
		if dg, ok := g.s.cfg.Catalog.Snapshot().Group(id); ok {
			return dg, nil
		}
	}
	return grp, err
}

func (g *grpcAPI) profile(ctx context.Context, id string) (*matchbox.Profile, error) {
	if id == "" {
		return nil, invalid("the request has no profile id")
	}
	p, _, err := g.s.cfg.Store.ProfileVersion(ctx, id)
	if errors.Is(err, matchbox.ErrNotFound) {
		if dp, ok := g.s.cfg.Catalog.Snapshot().Profile(id); ok {
			return dp, nil
		}
	}
	return p, err
}

func (g *grpcAPI) template(ctx context.Context, kind matchbox.TemplateKind, name string) ([]byte, error) {
	if name == "" {
		return nil, invalid("the request has no template name")
	}
	t, _, err := g.s.cfg.Store.TemplateVersion(ctx, kind, name)
	if errors.Is(err, matchbox.ErrNotFound) {
		if dt, ok := g.s.cfg.Catalog.Snapshot().Template(kind, name); ok {
			return dt.Content, nil
		}
		return nil, fmt.Errorf("%s template %q: %w", kind, name, matchbox.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return t.Content, nil
}

func (g *grpcAPI) putTemplate(ctx context.Context, kind matchbox.TemplateKind, name string, config []byte) error {
	if name == "" {
		return invalid("the request has no template name")
	}
	apiKind := string(kind)
	if kind == matchbox.KindIgnition && !matchbox.IsRawIgnition(name) {
		apiKind = "butane"
	}
	_, _, err := g.s.storeTemplate(ctx, &matchbox.Template{Kind: kind, Name: name, Content: config}, apiKind, g.write(ctx))
	return err
}

func (g *grpcAPI) deleteTemplate(ctx context.Context, kind matchbox.TemplateKind, name string) error {
	if name == "" {
		return invalid("the request has no template name")
	}
	return g.s.removeTemplate(ctx, kind, name, g.write(ctx))
}

type groupsRPC struct {
	*grpcAPI
	rpcpb.UnimplementedGroupsServer
}

func (g groupsRPC) GroupPut(ctx context.Context, req *pb.GroupPutRequest) (*pb.GroupPutResponse, error) {
	grp, err := groupFromPB(req.GetGroup())
	if err == nil {
		_, _, err = g.s.storeGroup(ctx, grp, g.write(ctx))
	}
	return &pb.GroupPutResponse{}, g.grpcError(ctx, "GroupPut", err)
}

func (g groupsRPC) GroupGet(ctx context.Context, req *pb.GroupGetRequest) (*pb.GroupGetResponse, error) {
	grp, err := g.group(ctx, req.GetId())
	if err != nil {
		return nil, g.grpcError(ctx, "GroupGet", err)
	}
	return &pb.GroupGetResponse{Group: groupToPB(grp)}, nil
}

func (g groupsRPC) GroupDelete(ctx context.Context, req *pb.GroupDeleteRequest) (*pb.GroupDeleteResponse, error) {
	var err error
	if req.GetId() == "" {
		err = invalid("the request has no group id")
	} else {
		err = g.s.removeGroup(ctx, req.GetId(), g.write(ctx))
	}
	return &pb.GroupDeleteResponse{}, g.grpcError(ctx, "GroupDelete", err)
}

func (g groupsRPC) GroupList(context.Context, *pb.GroupListRequest) (*pb.GroupListResponse, error) {
	groups := g.s.cfg.Catalog.Snapshot().Groups()
	out := make([]*storagepb.Group, 0, len(groups))
	for _, grp := range groups {
		out = append(out, groupToPB(grp))
	}
	return &pb.GroupListResponse{Groups: out}, nil
}

type profilesRPC struct {
	*grpcAPI
	rpcpb.UnimplementedProfilesServer
}

func (g profilesRPC) ProfilePut(ctx context.Context, req *pb.ProfilePutRequest) (*pb.ProfilePutResponse, error) {
	p, err := profileFromPB(req.GetProfile())
	if err == nil {
		_, _, err = g.s.storeProfile(ctx, p, g.write(ctx))
	}
	return &pb.ProfilePutResponse{}, g.grpcError(ctx, "ProfilePut", err)
}

func (g profilesRPC) ProfileGet(ctx context.Context, req *pb.ProfileGetRequest) (*pb.ProfileGetResponse, error) {
	p, err := g.profile(ctx, req.GetId())
	if err != nil {
		return nil, g.grpcError(ctx, "ProfileGet", err)
	}
	return &pb.ProfileGetResponse{Profile: profileToPB(p)}, nil
}

func (g profilesRPC) ProfileDelete(ctx context.Context, req *pb.ProfileDeleteRequest) (*pb.ProfileDeleteResponse, error) {
	var err error
	if req.GetId() == "" {
		err = invalid("the request has no profile id")
	} else {
		err = g.s.removeProfile(ctx, req.GetId(), g.write(ctx))
	}
	return &pb.ProfileDeleteResponse{}, g.grpcError(ctx, "ProfileDelete", err)
}

func (g profilesRPC) ProfileList(context.Context, *pb.ProfileListRequest) (*pb.ProfileListResponse, error) {
	profiles := g.s.cfg.Catalog.Snapshot().Profiles()
	out := make([]*storagepb.Profile, 0, len(profiles))
	for _, p := range profiles {
		out = append(out, profileToPB(p))
	}
	return &pb.ProfileListResponse{Profiles: out}, nil
}

type ignitionRPC struct {
	*grpcAPI
	rpcpb.UnimplementedIgnitionServer
}

func (g ignitionRPC) IgnitionPut(ctx context.Context, req *pb.IgnitionPutRequest) (*pb.IgnitionPutResponse, error) {
	err := g.putTemplate(ctx, matchbox.KindIgnition, req.GetName(), req.GetConfig())
	return &pb.IgnitionPutResponse{}, g.grpcError(ctx, "IgnitionPut", err)
}

func (g ignitionRPC) IgnitionGet(ctx context.Context, req *pb.IgnitionGetRequest) (*pb.IgnitionGetResponse, error) {
	c, err := g.template(ctx, matchbox.KindIgnition, req.GetName())
	if err != nil {
		return nil, g.grpcError(ctx, "IgnitionGet", err)
	}
	return &pb.IgnitionGetResponse{Config: c}, nil
}

func (g ignitionRPC) IgnitionDelete(ctx context.Context, req *pb.IgnitionDeleteRequest) (*pb.IgnitionDeleteResponse, error) {
	err := g.deleteTemplate(ctx, matchbox.KindIgnition, req.GetName())
	return &pb.IgnitionDeleteResponse{}, g.grpcError(ctx, "IgnitionDelete", err)
}

type genericRPC struct {
	*grpcAPI
	rpcpb.UnimplementedGenericServer
}

func (g genericRPC) GenericPut(ctx context.Context, req *pb.GenericPutRequest) (*pb.GenericPutResponse, error) {
	err := g.putTemplate(ctx, matchbox.KindGeneric, req.GetName(), req.GetConfig())
	return &pb.GenericPutResponse{}, g.grpcError(ctx, "GenericPut", err)
}

func (g genericRPC) GenericGet(ctx context.Context, req *pb.GenericGetRequest) (*pb.GenericGetResponse, error) {
	c, err := g.template(ctx, matchbox.KindGeneric, req.GetName())
	if err != nil {
		return nil, g.grpcError(ctx, "GenericGet", err)
	}
	return &pb.GenericGetResponse{Config: c}, nil
}

func (g genericRPC) GenericDelete(ctx context.Context, req *pb.GenericDeleteRequest) (*pb.GenericDeleteResponse, error) {
	err := g.deleteTemplate(ctx, matchbox.KindGeneric, req.GetName())
	return &pb.GenericDeleteResponse{}, g.grpcError(ctx, "GenericDelete", err)
}

type selectRPC struct {
	*grpcAPI
	rpcpb.UnimplementedSelectServer
}

// selection is the group (and profile) the catalog selects for labels, by
// the boot endpoints' rules; as in poseidon/matchbox, a reinstall's install
// profile is not part of it.
func (g selectRPC) selection(labels map[string]string) (matchbox.Selection, error) {
	vals := make(map[string][]string, len(labels))
	for k, v := range labels {
		vals[k] = []string{v}
	}
	labels, err := matchbox.ParseLabels(vals)
	if err != nil {
		return matchbox.Selection{}, err
	}
	return g.s.cfg.Catalog.Snapshot().Select(labels)
}

func (g selectRPC) SelectGroup(ctx context.Context, req *pb.SelectGroupRequest) (*pb.SelectGroupResponse, error) {
	sel, err := g.selection(req.GetLabels())
	if sel.Group == nil {
		if err == nil || errors.Is(err, matchbox.ErrNotFound) {
			err = fmt.Errorf("no matching group: %w", matchbox.ErrNotFound)
		}
		return nil, g.grpcError(ctx, "SelectGroup", err)
	}
	return &pb.SelectGroupResponse{Group: groupToPB(sel.Group)}, nil
}

func (g selectRPC) SelectProfile(ctx context.Context, req *pb.SelectProfileRequest) (*pb.SelectProfileResponse, error) {
	sel, err := g.selection(req.GetLabels())
	if sel.Profile == nil {
		if err == nil || errors.Is(err, matchbox.ErrNotFound) {
			switch {
			case sel.Group == nil:
				err = fmt.Errorf("no matching group: %w", matchbox.ErrNotFound)
			case sel.Group.Profile == "":
				err = fmt.Errorf("no matching profile: group %q has no profile: %w", sel.Group.ID, matchbox.ErrNotFound)
			default:
				err = fmt.Errorf("no matching profile: group %q names profile %q, which does not exist: %w", sel.Group.ID, sel.Group.Profile, matchbox.ErrNotFound)
			}
		}
		return nil, g.grpcError(ctx, "SelectProfile", err)
	}
	return &pb.SelectProfileResponse{Profile: profileToPB(sel.Profile)}, nil
}
