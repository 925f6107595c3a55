module github.com/session-grpc/session-grpc/clients/go

go 1.19

// The versions the stubs and the example were built and tested with (Debian 12's
// golang-google-grpc-dev and golang-google-protobuf-dev). With a module proxy, run
// `go mod tidy` once to fetch them and write go.sum.
require (
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
