      *> ACCTREC: account master and update records (fixed width).
       01  ACCOUNT-RECORD.
           05  ACCT-ID              PIC 9(09).
           05  ACCT-STATUS          PIC X(01).
               88  ACCT-OPEN        VALUE 'O'.
               88  ACCT-CLOSED      VALUE 'C'.
           05  ACCT-HOLDER          PIC X(30).
           05  ACCT-BALANCE         PIC S9(09)V99.
           05  ACCT-CREDIT-LIMIT    PIC 9(07)V99.
           05  ACCT-LAST-UPDATE     PIC 9(08).
       01  UPDATE-RECORD.
           05  UPD-ACCT-ID          PIC 9(09).
           05  UPD-TYPE             PIC X(01).
               88  UPD-DEPOSIT      VALUE 'D'.
               88  UPD-WITHDRAWAL   VALUE 'W'.
           05  UPD-AMOUNT           PIC 9(07)V99.
           05  UPD-DATE             PIC 9(08).
