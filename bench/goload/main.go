// Command goload is the bench's Go load generator (bench/goload.py builds and drives it): a client
// that costs little CPU per call, so a run it drives is bound by the server, not by the client.
//
// One process runs one measurement against one server and prints two lines on stdout: "measuring"
// when the warm-up is over (the bench starts its CPU meters then), and a JSON object with the
// calls completed in the measured window, the errors, the window's length and each call's
// latency in microseconds (for a stream: one "call" per message received, batched or not, one
// latency, the whole stream's). With -linger it then waits for stdin to close, so the bench can read its CPU
// time from /proc before it exits.
//
//	goload -addr 127.0.0.1:8203 -rpc add_message -sessions ID1,ID2 -duration 2.5s
//	goload -addr 127.0.0.1:8203 -rpc get_session -sessions ID -concurrency 32
//	goload -addr 127.0.0.1:8203 -rpc stream -sessions ID            # the whole session, once
//	goload -addr 127.0.0.1:8203 -rpc stream -batched -sessions ID   # the same, a page per response
//
// Closed loop: -concurrency callers (default: one per session), caller i on session i mod n,
// each calling back to back over one shared connection (as the Python load generator does).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sessionv1 "github.com/session-grpc/session-grpc/clients/go/session/v1"
	"google.golang.org/grpc"
)

type result struct {
	Calls       int     `json:"calls"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	LatenciesUs []int64 `json:"latencies_us"`
	FirstError  string  `json:"first_error,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8203", "host:port of the server")
	rpc := flag.String("rpc", "add_message", "add_message, get_session or stream")
	sessionList := flag.String("sessions", "", "comma-separated session ids")
	concurrency := flag.Int("concurrency", 0, "callers (default: one per session)")
	warmup := flag.Duration("warmup", 600*time.Millisecond, "calls not counted before the measured window")
	duration := flag.Duration("duration", 2500*time.Millisecond, "the measured window (unary RPCs)")
	content := flag.String("content", "hello", "AddMessage content")
	tokens := flag.Int64("tokens", 12, "AddMessage tokens_used")
	cost := flag.String("cost", "0.00015", "AddMessage cost")
	pageSize := flag.Int("page-size", 0, "StreamMessages page_size (0: the server's default)")
	after := flag.Int64("after-sequence", 0, "StreamMessages after_sequence (the no-op server streams this many)")
	batched := flag.Bool("batched", false, "StreamMessages batched: one page of messages per response")
	linger := flag.Bool("linger", false, "after the result, wait for stdin to close before exiting")
	flag.Parse()

	sessions := strings.Split(*sessionList, ",")
	if *sessionList == "" {
		log.Fatal("-sessions is required")
	}
	if *concurrency <= 0 {
		*concurrency = len(sessions)
	}
	dial, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Plaintext; grpc-go 1.34 and later spell it grpc.WithTransportCredentials(insecure.NewCredentials()).
	conn, err := grpc.DialContext(dial, *addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		log.Fatalf("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	messages := sessionv1.NewMessageServiceClient(conn)
	reader := sessionv1.NewSessionServiceClient(conn)

	var out result
	switch *rpc {
	case "stream":
		out = stream(messages, &sessionv1.StreamMessagesRequest{
			SessionId: sessions[0], PageSize: int32(*pageSize), AfterSequence: *after, Batched: *batched,
		})
	case "add_message", "get_session":
		call := func(ctx context.Context, session string) error {
			if *rpc == "get_session" {
				_, err := reader.GetSession(ctx, &sessionv1.GetSessionRequest{SessionId: session})
				return err
			}
			_, err := messages.AddMessage(ctx, &sessionv1.AddMessageRequest{
				SessionId: session, Role: sessionv1.Role_ROLE_USER, Content: *content, TokensUsed: *tokens, Cost: *cost,
			})
			return err
		}
		out = closedLoop(call, sessions, *concurrency, *warmup, *duration)
	default:
		log.Fatalf("unknown -rpc %q", *rpc)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		log.Fatal(err)
	}
	// Stay until stdin closes, so the bench reads this process's CPU time after the result.
	if *linger {
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
}

func measuring() {
	fmt.Println("measuring")
	os.Stdout.Sync()
}

// closedLoop runs `concurrency` callers back to back; calls that end inside the measured window
// (after the warm-up, for `duration`) count, as in bench/loadgen.py's closed_loop.
func closedLoop(call func(context.Context, string) error, sessions []string, concurrency int, warmup, duration time.Duration) result {
	var state int32 // 0 warm-up, 1 measuring, 2 stopping
	var mu sync.Mutex
	var out result
	var wg sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func(session string) {
			defer wg.Done()
			latencies := make([]int64, 0, 4096)
			errors := 0
			firstError := ""
			for atomic.LoadInt32(&state) < 2 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				started := time.Now()
				err := call(ctx, session)
				elapsed := time.Since(started)
				cancel()
				if atomic.LoadInt32(&state) != 1 {
					continue
				}
				if err != nil {
					errors++
					if firstError == "" {
						firstError = err.Error()
					}
					continue
				}
				latencies = append(latencies, elapsed.Microseconds())
			}
			mu.Lock()
			out.LatenciesUs = append(out.LatenciesUs, latencies...)
			out.Errors += errors
			if out.FirstError == "" {
				out.FirstError = firstError
			}
			mu.Unlock()
		}(sessions[i%len(sessions)])
	}
	time.Sleep(warmup)
	measuring()
	began := time.Now()
	atomic.StoreInt32(&state, 1)
	time.Sleep(duration)
	atomic.StoreInt32(&state, 2)
	out.Seconds = time.Since(began).Seconds()
	wg.Wait()
	// A call that ended after the window closed was not counted (state 2); its latency is not either.
	out.Calls = len(out.LatenciesUs)
	return out
}

// stream reads one whole StreamMessages; every message received is a "call".
func stream(messages sessionv1.MessageServiceClient, request *sessionv1.StreamMessagesRequest) result {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer cancel()
	measuring()
	started := time.Now()
	calls, err := drain(ctx, messages, request)
	elapsed := time.Since(started)
	out := result{Calls: calls, Seconds: elapsed.Seconds(), LatenciesUs: []int64{elapsed.Microseconds()}}
	if err != nil {
		out.Errors, out.FirstError = 1, err.Error()
	}
	return out
}

func drain(ctx context.Context, messages sessionv1.MessageServiceClient, request *sessionv1.StreamMessagesRequest) (int, error) {
	items, err := messages.StreamMessages(ctx, request)
	if err != nil {
		return 0, err
	}
	received := 0
	for {
		response, err := items.Recv()
		if err == io.EOF {
			return received, nil
		}
		if err != nil {
			return received, err
		}
		// A batched response carries its page in Messages, an unbatched one its message in Message.
		if page := response.GetMessages(); len(page) > 0 {
			received += len(page)
		} else if response.GetMessage() != nil {
			received++
		}
	}
}
