from dominant_patterns.run import main

main()
