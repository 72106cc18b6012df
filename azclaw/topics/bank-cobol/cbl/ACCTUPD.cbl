       IDENTIFICATION DIVISION.
       PROGRAM-ID. ACCTUPD.
      *> Applies deposits and withdrawals to the account master.
      *> Rejects updates for closed accounts and withdrawals that
      *> would exceed balance plus credit limit.
       DATA DIVISION.
       WORKING-STORAGE SECTION.
           COPY ACCTREC.
       01  WS-NEW-BALANCE           PIC S9(09)V99.
       01  WS-AVAILABLE             PIC S9(09)V99.
       01  WS-REJECT-REASON         PIC X(20).
       01  WS-COUNTERS.
           05  WS-APPLIED           PIC 9(07) VALUE ZERO.
           05  WS-REJECTED          PIC 9(07) VALUE ZERO.
       PROCEDURE DIVISION.
       1000-APPLY-UPDATE.
           IF ACCT-CLOSED
               MOVE 'ACCOUNT CLOSED' TO WS-REJECT-REASON
               PERFORM 9000-REJECT
           ELSE
               IF UPD-DEPOSIT
                   PERFORM 2000-DEPOSIT
               ELSE
                   IF UPD-WITHDRAWAL
                       PERFORM 3000-WITHDRAW
                   ELSE
                       MOVE 'BAD UPDATE TYPE' TO WS-REJECT-REASON
                       PERFORM 9000-REJECT
                   END-IF
               END-IF
           END-IF.
       2000-DEPOSIT.
           COMPUTE WS-NEW-BALANCE ROUNDED = ACCT-BALANCE + UPD-AMOUNT
               ON SIZE ERROR
                   MOVE 'BALANCE OVERFLOW' TO WS-REJECT-REASON
                   PERFORM 9000-REJECT
               NOT ON SIZE ERROR
                   PERFORM 8000-STORE
           END-COMPUTE.
       3000-WITHDRAW.
           COMPUTE WS-AVAILABLE = ACCT-BALANCE + ACCT-CREDIT-LIMIT
           IF UPD-AMOUNT > WS-AVAILABLE
               MOVE 'OVER CREDIT LIMIT' TO WS-REJECT-REASON
               PERFORM 9000-REJECT
           ELSE
               COMPUTE WS-NEW-BALANCE ROUNDED =
                   ACCT-BALANCE - UPD-AMOUNT
               PERFORM 8000-STORE
           END-IF.
       8000-STORE.
           MOVE WS-NEW-BALANCE TO ACCT-BALANCE
           MOVE UPD-DATE TO ACCT-LAST-UPDATE
           ADD 1 TO WS-APPLIED.
       9000-REJECT.
           ADD 1 TO WS-REJECTED
           DISPLAY 'REJECT ' UPD-ACCT-ID ' ' WS-REJECT-REASON.
