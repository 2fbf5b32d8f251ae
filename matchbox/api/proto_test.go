package api_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"matchbox.dev/matchbox/api/rpcpb"
	pb "matchbox.dev/matchbox/api/serverpb"
	"matchbox.dev/matchbox/api/storagepb"
)

// The committed Go code of the gRPC API is what scripts/gen-proto makes
// from the .proto files now.
func TestGeneratedProtoIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not found: scripts/install-test-deps installs it (Debian protobuf-compiler)")
	}
	out := t.TempDir()
	cmd := exec.Command("../../scripts/gen-proto", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/gen-proto: %v\n%s", err, b)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*", "*.pb.go"))
	if len(files) != 4 {
		t.Fatalf("gen-proto made %d files: %v", len(files), files)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(out, f)
		want, _ := os.ReadFile(f)
		have, err := os.ReadFile(rel)
		if err != nil || !bytes.Equal(have, want) {
			t.Errorf("%s is not what scripts/gen-proto makes from the .proto files now: run scripts/gen-proto and commit the result", rel)
		}
	}
}

// The wire form is poseidon/matchbox's: messages encoded by field number
// as its .proto files number them decode into ours, and the method paths
// are its.
func TestProtoWireCompatible(t *testing.T) {
	// A message is its fields, each a number and its bytes (strings,
	// bytes, messages and map entries are all length-delimited).
	type field struct {
		num protowire.Number
		val []byte
	}
	msg := func(fields ...field) []byte {
		var b []byte
		for _, f := range fields {
			b = protowire.AppendTag(b, f.num, protowire.BytesType)
			b = protowire.AppendBytes(b, f.val)
		}
		return b
	}
	str := func(num protowire.Number, s string) field { return field{num, []byte(s)} }
	sub := func(num protowire.Number, fields ...field) field { return field{num, msg(fields...)} }

	// Profile: id 1, name 2, ignition_id 3, cloud_id 4, boot 5 (NetBoot:
	// kernel 1, initrd 2, args 4), generic_id 6.
	var p storagepb.Profile
	if err := proto.Unmarshal(msg(str(1, "p"), str(2, "P"), str(3, "p.ign"), str(4, "p.cloud"),
		sub(5, str(1, "/k"), str(2, "/i"), str(4, "console=ttyS0")), str(6, "p.gen")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Id != "p" || p.Name != "P" || p.IgnitionId != "p.ign" || p.CloudId != "p.cloud" || p.GenericId != "p.gen" ||
		p.Boot.GetKernel() != "/k" || !slices.Equal(p.Boot.GetInitrd(), []string{"/i"}) || !slices.Equal(p.Boot.GetArgs(), []string{"console=ttyS0"}) {
		t.Errorf("profile decoded as %v", &p)
	}
	// Group: id 1, name 2, profile 3, selector 4 (map entries: key 1,
	// value 2), metadata 5.
	var g storagepb.Group
	if err := proto.Unmarshal(msg(str(1, "g"), str(2, "G"), str(3, "p"), sub(4, str(1, "mac"), str(2, "52:54:00:00:00:01")), str(5, `{"a":"b"}`)), &g); err != nil {
		t.Fatal(err)
	}
	if g.Id != "g" || g.Name != "G" || g.Profile != "p" || g.Selector["mac"] != "52:54:00:00:00:01" || string(g.Metadata) != `{"a":"b"}` {
		t.Errorf("group decoded as %v", &g)
	}
	// Templates: name 1 and config 2 in a Put, config 1 in a Get answer.
	var put pb.IgnitionPutRequest
	if err := proto.Unmarshal(msg(str(1, "t.ign"), str(2, "{}")), &put); err != nil || put.Name != "t.ign" || string(put.Config) != "{}" {
		t.Errorf("IgnitionPutRequest decoded as %v, %v", &put, err)
	}
	var got pb.GenericGetResponse
	if err := proto.Unmarshal(msg(str(1, "x")), &got); err != nil || string(got.Config) != "x" {
		t.Errorf("GenericGetResponse decoded as %v, %v", &got, err)
	}
	// Requests name their object in field 1.
	var gp pb.GroupPutRequest
	if err := proto.Unmarshal(msg(sub(1, str(1, "g"))), &gp); err != nil || gp.GetGroup().GetId() != "g" {
		t.Errorf("GroupPutRequest decoded as %v, %v", &gp, err)
	}
	for _, m := range []string{
		rpcpb.Groups_GroupPut_FullMethodName, rpcpb.Groups_GroupGet_FullMethodName, rpcpb.Groups_GroupDelete_FullMethodName, rpcpb.Groups_GroupList_FullMethodName,
		rpcpb.Profiles_ProfilePut_FullMethodName, rpcpb.Profiles_ProfileGet_FullMethodName, rpcpb.Profiles_ProfileDelete_FullMethodName, rpcpb.Profiles_ProfileList_FullMethodName,
		rpcpb.Ignition_IgnitionPut_FullMethodName, rpcpb.Ignition_IgnitionGet_FullMethodName, rpcpb.Ignition_IgnitionDelete_FullMethodName,
		rpcpb.Generic_GenericPut_FullMethodName, rpcpb.Generic_GenericGet_FullMethodName, rpcpb.Generic_GenericDelete_FullMethodName,
		rpcpb.Select_SelectGroup_FullMethodName, rpcpb.Select_SelectProfile_FullMethodName,
	} {
		if !slices.Contains(wantMethods, m) {
			t.Errorf("method %s is not poseidon/matchbox's", m)
		}
	}
}

var wantMethods = []string{
	"/rpcpb.Groups/GroupPut", "/rpcpb.Groups/GroupGet", "/rpcpb.Groups/GroupDelete", "/rpcpb.Groups/GroupList",
	"/rpcpb.Profiles/ProfilePut", "/rpcpb.Profiles/ProfileGet", "/rpcpb.Profiles/ProfileDelete", "/rpcpb.Profiles/ProfileList",
	"/rpcpb.Ignition/IgnitionPut", "/rpcpb.Ignition/IgnitionGet", "/rpcpb.Ignition/IgnitionDelete",
	"/rpcpb.Generic/GenericPut", "/rpcpb.Generic/GenericGet", "/rpcpb.Generic/GenericDelete",
	"/rpcpb.Select/SelectGroup", "/rpcpb.Select/SelectProfile",
}
