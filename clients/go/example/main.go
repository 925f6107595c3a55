// Command example creates a session, adds a user and an assistant message with
// tokens and an exact cost, streams the messages back and checks the totals.
//
//	go run ./example -addr localhost:8203
//
// It exits non-zero at the first surprise.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"time"

	sessionv1 "github.com/session-grpc/session-grpc/clients/go/session/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

func main() {
	addr := flag.String("addr", "localhost:8203", "host:port of session-grpc")
	user := flag.String("user", fmt.Sprintf("go-example-%d", time.Now().UnixNano()), "user_id of the new session")
	token := flag.String("token", "", "bearer token (token mode only)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}
	// Plaintext; grpc-go 1.34 and later spell it grpc.WithTransportCredentials(insecure.NewCredentials()).
	conn, err := grpc.DialContext(ctx, *addr, grpc.WithInsecure())
	if err != nil {
		log.Fatalf("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	sessions := sessionv1.NewSessionServiceClient(conn)
	messages := sessionv1.NewMessageServiceClient(conn)

	created, err := sessions.CreateSession(ctx, &sessionv1.CreateSessionRequest{UserId: *user, Title: "Go example"})
	if err != nil {
		log.Fatalf("CreateSession: %v", err)
	}
	id := created.GetSession().GetSessionId()
	fmt.Println("created session", id)

	turns := []struct {
		role    sessionv1.Role
		content string
		tokens  int64
		cost    string
	}{
		{sessionv1.Role_ROLE_USER, "Where should I go in May?", 12, "0.00015"},
		{sessionv1.Role_ROLE_ASSISTANT, "Lisbon: warm, not yet crowded.", 48, "0.0006"},
	}
	for i, turn := range turns {
		added, err := messages.AddMessage(ctx, &sessionv1.AddMessageRequest{
			SessionId: id, Role: turn.role, Content: turn.content, TokensUsed: turn.tokens, Cost: turn.cost,
			RequestId: fmt.Sprintf("%08x-0000-4000-8000-%012x", time.Now().UnixNano()&0xffffffff, i+1),
		})
		if err != nil {
			log.Fatalf("AddMessage: %v", err)
		}
		fmt.Printf("added message %d (%s)\n", added.GetMessage().GetSequence(), turn.role)
	}

	stream, err := messages.StreamMessages(ctx, &sessionv1.StreamMessagesRequest{SessionId: id})
	if err != nil {
		log.Fatalf("StreamMessages: %v", err)
	}
	var sequences []int64
	for {
		item, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatalf("StreamMessages: %v", err)
		}
		m := item.GetMessage()
		sequences = append(sequences, m.GetSequence())
		fmt.Printf("streamed %d %s: %s (%d tokens, cost %s)\n", m.GetSequence(), m.GetRole(), m.GetContent(), m.GetTokensUsed(), m.GetCost())
	}
	if len(sequences) != 2 || sequences[0] != 1 || sequences[1] != 2 {
		log.Fatalf("streamed sequences %v, want [1 2]", sequences)
	}

	got, err := sessions.GetSession(ctx, &sessionv1.GetSessionRequest{SessionId: id})
	if err != nil {
		log.Fatalf("GetSession: %v", err)
	}
	s := got.GetSession()
	if s.GetMessageCount() != 2 || s.GetTotalTokens() != 60 || s.GetTotalCost() != "0.00075" {
		log.Fatalf("totals %d messages, %d tokens, cost %q; want 2, 60, \"0.00075\"", s.GetMessageCount(), s.GetTotalTokens(), s.GetTotalCost())
	}
	fmt.Printf("totals ok: %d messages, %d tokens, cost %s\n", s.GetMessageCount(), s.GetTotalTokens(), s.GetTotalCost())
}
