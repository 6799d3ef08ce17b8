// Package wire holds the fedrank.v1 protobuf schema (proto/fedrank/v1/fedrank.proto),
// its generated Go code (fedrank.pb.go, committed) and the codec every driver uses:
// Marshal (deterministic) and Unmarshal (bounded, strict).
//
// # Regenerating fedrank.pb.go
//
// After editing the .proto file, run from the repository root:
//
//	go generate ./wire/
//
// That runs `buf lint` and `buf generate` (gen.go). Both tools come through the Go
// module proxy only, nothing else is downloaded or installed:
//
//   - buf is a `tool` of the separate module tools/go.mod (pinned to v1.75.0;
//     kept out of the main module's graph, where it would add ~90 requirements and a
//     newer google.golang.org/protobuf). The first run builds it (about 2 minutes on
//     2 cores), later runs use the build cache.
//   - protoc-gen-go is run by buf as `go run google.golang.org/protobuf/cmd/protoc-gen-go`
//     from this directory (buf.gen.yaml), that is from the main module, so the
//     generator is always the same version as the protobuf runtime in go.mod.
//
// buf.yaml lints with the STANDARD rules and checks breaking changes per file
// (`go tool -modfile=../tools/go.mod buf breaking --against <ref>` from this directory).
// Building and testing never need code generation.
package wire
